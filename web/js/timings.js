// timings: ESP durations against measured bandwidth. A scatter of each device's device-setup
// time (and device-preparation time) against the mean bandwidth it measured while downloading,
// with the capacity model's curve when the server has a capacity model; the percentiles of the
// fleet's ESP phases; and green devices per hour.

import { h, fill, setText } from './dom.js';
import { api, hasEndpoint } from './api.js';
import { duration, number, percent, dateTime } from './format.js';
import { loadChart, palette, baseOptions } from './charts.js';

const PHASES = [['device_preparation', 'Device preparation'], ['device_setup', 'Device setup'], ['total', 'Total ESP']];

function first(obj, names) {
  for (const n of names) if (obj && typeof obj[n] === 'number' && Number.isFinite(obj[n])) return obj[n];
  return null;
}

// The model's device-setup time as a function of bandwidth: either points the server gives, or
// fixed seconds plus payload over bandwidth from its fitted parameters. Null when neither is there.
export function modelCurve(cap, xmin, xmax) {
  if (!cap) return null;
  const given = cap.curve || (cap.model && cap.model.curve);
  if (Array.isArray(given) && given.length) {
    const pts = given.map((p) => ({ x: first(p, ['mbps', 'bandwidth_mbps', 'x']), y: first(p, ['device_setup_s', 'seconds', 'y']) }))
      .filter((p) => p.x !== null && p.y !== null);
    if (pts.length) return pts.map((p) => ({ x: p.x, y: p.y / 60 }));
  }
  const m = cap.model || {};
  const fixed = first(m, ['setup_fixed_s', 'device_setup_fixed_s', 'fixed_s', 'install_s', 'setup_install_s']);
  let payloadMb = first(m, ['payload_mb', 'setup_payload_mb']);
  if (payloadMb === null) {
    const b = first(m, ['payload_bytes', 'setup_bytes', 'bytes']);
    if (b !== null) payloadMb = b / 1e6;
  }
  if (fixed === null || payloadMb === null) return null;
  const pts = [];
  const lo = Math.max(1, xmin);
  for (let i = 0; i <= 60; i++) {
    const x = lo * Math.pow(xmax / lo, i / 60);
    pts.push({ x, y: (fixed + (payloadMb * 8) / x) / 60 });
  }
  return pts;
}

// "08:00" for each hour, with the date where the day changes.
function hourLabels(hours) {
  let lastDay = '';
  return hours.map((iso) => {
    const t = new Date(iso);
    const day = t.toLocaleDateString(undefined, { month: 'short', day: 'numeric' });
    const time = t.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
    if (day === lastDay) return time;
    lastDay = day;
    return [time, day];
  });
}

export function mountTimings(root, { navigate }) {
  let gone = false;
  let charts = [];
  const msg = h('p', { class: 'page-msg', role: 'status', text: 'Loading…' });
  const stats = h('div', { class: 'stats' });
  const scatterCanvas = h('canvas', { id: 'scatter', role: 'img', 'aria-label': 'Scatter chart: ESP phase duration in minutes against the bandwidth each device measured, in Mbit/s' });
  const scatterNote = h('p', { class: 'muted chart-note' });
  const hourCanvas = h('canvas', { id: 'per-hour', role: 'img', 'aria-label': 'Bar chart: devices that went green, per hour' });
  const chartMsg = h('p', { class: 'chart-msg', role: 'status' });
  const asOf = h('span', { class: 'muted' });
  root.append(h('section', { class: 'timings', 'aria-labelledby': 'tim-h' },
    h('header', { class: 'page-head' },
      h('h1', { id: 'tim-h', text: 'ESP durations' }),
      h('p', { class: 'lede' }, 'Device setup is the part of the Enrollment Status Page that waits on downloads; device preparation is not. Each point is one device. ', asOf),
      h('p', null, h('button', { type: 'button', class: 'secondary', text: 'Refresh', on: { click: () => load() } }))),
    msg, stats, chartMsg,
    h('section', { class: 'card chart-card', 'aria-labelledby': 'sc-h' },
      h('h2', { id: 'sc-h', text: 'Duration against measured bandwidth' }),
      h('div', { class: 'chart-box tall' }, scatterCanvas), scatterNote),
    h('section', { class: 'card chart-card', 'aria-labelledby': 'ph-h' },
      h('h2', { id: 'ph-h', text: 'Green devices per hour' }),
      h('div', { class: 'chart-box' }, hourCanvas))));

  function statsTable(summary) {
    const e = summary.esp_durations_s || {};
    const dph = summary.devices_per_hour || {};
    const ftr = summary.first_time_right || {};
    return [
      h('div', { class: 'kpis' },
        kpi('Devices', number(summary.devices)),
        kpi('Green per hour (overall)', number(dph.overall, 1)),
        kpi('Green in the last hour', number(dph.last_hour)),
        kpi('First time right', `${percent(ftr.rate)}`, `${number(ftr.first_time)} of ${number(ftr.finished)} finished`)),
      h('div', { class: 'table-wrap' }, h('table', { class: 'percentiles' },
        h('caption', { text: 'ESP phase durations over the devices that finished them' }),
        h('thead', null, h('tr', null, ['Phase', 'Devices', 'p50', 'p90', 'p95', 'p99', 'Max'].map((t, i) => h('th', { scope: 'col', class: i ? 'num' : null, text: t })))),
        h('tbody', null, PHASES.map(([k, label]) => {
          const p = e[k] || {};
          return h('tr', { dataset: { phase: k } }, h('th', { scope: 'row', text: label }), h('td', { class: 'num', text: number(p.count) }),
            ['p50', 'p90', 'p95', 'p99', 'max'].map((q) => h('td', { class: 'num', text: duration(p[q]) })));
        })))),
    ];
  }

  function kpi(label, value, sub) {
    return h('div', { class: 'kpi' }, h('span', { class: 'kpi-label', text: label }), h('span', { class: 'kpi-value', text: value }),
      sub ? h('span', { class: 'kpi-sub', text: sub }) : null);
  }

  async function load() {
    setText(msg, 'Loading…');
    msg.className = 'page-msg';
    let summary;
    let timings;
    try {
      [summary, timings] = await Promise.all([api('/api/v1/summary'), api('/api/v1/timings')]);
    } catch (e) {
      if (gone) return;
      msg.className = 'page-msg error';
      setText(msg, `The timings could not be loaded: ${e.text || e.message}`);
      return;
    }
    if (gone) return;
    setText(msg, '');
    setText(asOf, `As of ${dateTime(summary.generated_at)}.`);
    fill(stats, statsTable(summary));

    let cap = null;
    let capNote = '';
    if (await hasEndpoint('GET', '/api/v1/capacity')) {
      try {
        cap = await api('/api/v1/capacity');
      } catch (e) {
        capNote = `The capacity model could not be read: ${e.text || e.message}`;
      }
    } else {
      capNote = 'The capacity model’s curve appears here once the server offers a capacity model.';
    }
    if (gone) return;

    let Chart;
    try {
      Chart = await loadChart();
    } catch (e) {
      if (!gone) {
        chartMsg.className = 'chart-msg error';
        setText(chartMsg, `Charts are unavailable: ${e.message}. The figures above still hold.`);
      }
      return;
    }
    if (gone) return;
    drawCharts(Chart, timings, summary, cap, capNote);
  }

  function drawCharts(Chart, timings, summary, cap, capNote) {
    for (const c of charts) c.destroy();
    charts = [];
    const c = palette();
    const pts = (timings.points || []).filter((p) => p.mean_mbps !== null && p.mean_mbps > 0);
    const setup = pts.filter((p) => p.device_setup_s !== null).map((p) => ({ x: p.mean_mbps, y: p.device_setup_s / 60, serial: p.serial }));
    const prep = pts.filter((p) => p.device_preparation_s !== null).map((p) => ({ x: p.mean_mbps, y: p.device_preparation_s / 60, serial: p.serial }));
    // Chart.js reads unparsed data as sorted by x (it takes the ends as the axis range).
    setup.sort((a, b) => a.x - b.x);
    prep.sort((a, b) => a.x - b.x);
    const xs = pts.map((p) => p.mean_mbps);
    const spread = xs.length ? Math.max(...xs) / Math.min(...xs) : 1;
    const curve = xs.length ? modelCurve(cap, Math.min(...xs), Math.max(...xs)) : null;
    const datasets = [
      { label: 'Device setup', data: setup, backgroundColor: c.blue, borderColor: c.blue, pointStyle: 'circle', pointRadius: 3 },
      { label: 'Device preparation', data: prep, backgroundColor: c.orange, borderColor: c.orange, pointStyle: 'triangle', pointRadius: 3 },
    ];
    if (curve) {
      datasets.push({ type: 'line', label: 'Capacity model (device setup)', data: curve, borderColor: c.vermillion, backgroundColor: c.vermillion,
        pointRadius: 0, borderWidth: 2, borderDash: [6, 3], tension: 0 });
    }
    setText(scatterNote, `${setup.length} devices with device setup, ${prep.length} with device preparation, of ${(timings.points || []).length} measured. ${curve ? 'The dashed line is the capacity model’s device-setup time at each bandwidth.' : capNote}`);
    const scatter = new Chart(scatterCanvas, {
      type: 'scatter',
      data: { datasets },
      options: {
        ...baseOptions(Chart),
        parsing: false,
        scales: {
          x: spread > 8
            ? { type: 'logarithmic', title: { display: true, text: 'Mean bandwidth measured by the device (Mbit/s, log scale)' } }
            : { type: 'linear', title: { display: true, text: 'Mean bandwidth measured by the device (Mbit/s)' } },
          y: { beginAtZero: true, title: { display: true, text: 'Minutes' } },
        },
        plugins: {
          legend: { position: 'bottom' },
          tooltip: { callbacks: { label: (ctx) => `${ctx.raw.serial ? `${ctx.raw.serial}: ` : ''}${ctx.parsed.y.toFixed(1)} min at ${ctx.parsed.x.toFixed(0)} Mbit/s` } },
        },
        onClick: (_e, els) => {
          const el = els && els[0];
          const p = el ? scatter.data.datasets[el.datasetIndex].data[el.index] : null;
          if (p && p.serial) navigate(`#/device/${encodeURIComponent(p.serial)}`);
        },
      },
    });
    charts.push(scatter);

    const byHour = (summary.devices_per_hour && summary.devices_per_hour.by_hour) || [];
    charts.push(new Chart(hourCanvas, {
      type: 'bar',
      data: {
        labels: hourLabels(byHour.map((b) => b.hour)),
        datasets: [{ label: 'Green devices', data: byHour.map((b) => b.green), backgroundColor: c.green }],
      },
      options: { ...baseOptions(Chart), plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } } },
    }));
  }

  load();
  return () => {
    gone = true;
    for (const c of charts) c.destroy();
  };
}
