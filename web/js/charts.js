// charts: Chart.js, loaded on first use from vendor/chart.umd.js (the npm package's UMD build,
// copied there by `npm ci`; see package.json). A missing file is reported in words, and the
// pages that chart still show their numbers as text.

let loading = null;

export function loadChart() {
  if (window.Chart) return Promise.resolve(window.Chart);
  if (!loading) {
    loading = new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = 'vendor/chart.umd.js';
      s.async = true;
      s.onload = () => (window.Chart ? resolve(window.Chart) : reject(new Error('the chart library did not load')));
      s.onerror = () => {
        loading = null;
        s.remove();
        reject(new Error('the chart library (vendor/chart.umd.js) is not installed; run npm ci in the repository'));
      };
      document.head.append(s);
    });
  }
  return loading;
}

// Colours that stay apart for the common kinds of colour blindness (Okabe and Ito), read from
// the style sheet so light and dark themes agree.
export function palette() {
  const cs = getComputedStyle(document.documentElement);
  const v = (name, fallback) => cs.getPropertyValue(name).trim() || fallback;
  return {
    blue: v('--c-blue', '#0072b2'),
    orange: v('--c-orange', '#e69f00'),
    green: v('--c-green', '#009e73'),
    vermillion: v('--c-vermillion', '#d55e00'),
    sky: v('--c-sky', '#56b4e9'),
    purple: v('--c-purple', '#cc79a7'),
    text: v('--fg', '#1b1f24'),
    muted: v('--muted', '#59636e'),
    grid: v('--line', '#d0d7de'),
  };
}

// Shared defaults: no animation (live data would keep the charts moving), theme colours.
export function baseOptions(Chart) {
  const c = palette();
  Chart.defaults.color = c.text;
  Chart.defaults.borderColor = c.grid;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  return { animation: false, responsive: true, maintainAspectRatio: false };
}
