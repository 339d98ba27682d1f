// planner: the capacity planner. A form of the room's figures (any left empty takes the value
// the server fitted from measured devices) asks GET /api/v1/capacity for a prediction: time per
// device, makespan, devices per hour, ESP timeouts, the recommended number of slots and what
// bounds the room. Throughput against slots is charted from the answer's throughput_by_slots,
// or, when the server does not send it, from one prediction per slot count.

import { h, fill, dl, setText } from './dom.js';
import { api, hasEndpoint, ApiError } from './api.js';
import { duration, number, percent } from './format.js';
import { profiles } from './profiles.js';
import { loadChart, palette, baseOptions } from './charts.js';

const FIELDS = [
  ['devices', 'Devices to provision', { min: 1, step: 1, max: 1000000 }, 'How many devices this run must get through.'],
  ['slots', 'Bench slots', { min: 1, step: 1, max: 10000 }, 'Devices wired and provisioning at once.'],
  ['uplink_mbps', 'Uplink (Mbit/s)', { min: 1, step: 'any' }, 'The room’s internet bandwidth, shared by every download.'],
  ['payload_mb', 'Payload per device (MB)', { min: 0, step: 'any' }, 'What device setup downloads: apps such as Microsoft 365 Apps.'],
  ['peer_share', 'Share from LAN peers (0–1)', { min: 0, max: 1, step: 0.01 }, 'Part of the payload Delivery Optimization takes from peers instead of the uplink.'],
  ['cache_share', 'Share from a Connected Cache (0–1)', { min: 0, max: 1, step: 0.01 }, 'Part of the payload a cache on the LAN serves.'],
  ['esp_timeout_min', 'ESP timeout (minutes)', { min: 1, step: 1, max: 1440 }, 'Device setup running longer turns the screen red.'],
];

// The fitted model's figures, in words.
const MODEL_LABELS = [
  ['fixed_s', 'Fixed work per device', 'duration'],
  ['pre_setup_s', 'Before device setup', 'duration'],
  ['setup_fixed_s', 'Device setup without downloads', 'duration'],
  ['download_s', 'Downloads per device (measured)', 'duration'],
  ['changeover_s', 'Changeover between devices', 'duration'],
  ['reseal_s', 'Green screen to reseal', 'duration'],
  ['rework_s', 'Bench time lost to failed attempts', 'duration'],
  ['uplink_mbps', 'Effective uplink', 'mbps'],
  ['payload_mb', 'Payload per device', 'mb'],
  ['uplink_payload_mb', 'Of it over the uplink', 'mb'],
  ['peer_share', 'From LAN peers', 'share'],
  ['cache_share', 'From a Connected Cache', 'share'],
  ['nic_mbps', 'Network adapter', 'mbps'],
  ['red_share', 'Bench stays ending red', 'share'],
  ['esp_timeout_min', 'ESP timeout', 'min'],
  ['slots', 'Slots seen in use', 'n'],
  ['max_attempts', 'Attempts per device at most', 'n'],
];

function modelValue(kind, v) {
  if (v === null || v === undefined) return '—';
  switch (kind) {
    case 'duration': return duration(v);
    case 'mbps': return `${number(v, 0)} Mbit/s`;
    case 'mb': return `${number(v, 0)} MB`;
    case 'share': return percent(v, 0);
    case 'min': return `${number(v)} min`;
    default: return number(v);
  }
}

// "If LAN peers served 50 %" for a what-if row.
function whatIfText(w) {
  const v = w.value;
  switch (w.change) {
    case 'peer_share': return `LAN peers served ${percent(v, 0)} of the payload`;
    case 'cache_share': return `a Connected Cache served ${percent(v, 0)}`;
    case 'uplink_mbps': return `the uplink were ${number(v, 0)} Mbit/s`;
    case 'slots': return `the bench had ${number(v)} slots`;
    case 'payload_mb': return `the payload were ${number(v, 0)} MB`;
    case 'esp_timeout_min': return `the ESP timeout were ${number(v)} min`;
    case 'devices': return `there were ${number(v)} devices`;
    default: return `${w.change} = ${v}`;
  }
}

const BOUND_TEXT = {
  bandwidth: 'The uplink is the limit: more slots would only share it more thinly (and push devices toward the ESP timeout).',
  install: 'Installation work is the limit: the uplink has room, so more slots would raise throughput.',
};

export function mountPlanner(root, { query }) {
  let gone = false;
  let chart = null;
  const initial = new URLSearchParams(query || '');
  const inputs = {};
  const errs = {};
  const fields = FIELDS.map(([name, label, attrs, help]) => {
    const id = `cap-${name}`;
    inputs[name] = h('input', { id, name, type: 'number', inputmode: 'decimal', placeholder: 'fitted', value: initial.get(name) || '', ...attrs, 'aria-describedby': `${id}-help ${id}-err` });
    errs[name] = h('span', { class: 'field-error', id: `${id}-err` });
    return h('div', { class: 'field' }, h('label', { for: id, text: label }), inputs[name],
      h('span', { class: 'help', id: `${id}-help`, text: help }), errs[name]);
  });
  const profileSel = h('select', { id: 'cap-profile', name: 'profile' }, h('option', { value: '', text: 'The whole fleet' }));
  profiles().then((list) => {
    for (const p of list) profileSel.append(h('option', { value: p.name, text: `${p.name} (${p.group_tag})` }));
    profileSel.value = initial.get('profile') || '';
  }).catch(() => { /* the fleet as a whole still plans */ });
  const profileField = h('div', { class: 'field' }, h('label', { for: 'cap-profile', text: 'Fitted from' }), profileSel,
    h('span', { class: 'help', text: 'The devices whose measurements the model is fitted from.' }));
  const submit = h('button', { type: 'submit', text: 'Predict' });
  const form = h('form', { class: 'planner-form', 'aria-labelledby': 'plan-h', novalidate: true, on: { submit: (e) => { e.preventDefault(); run(); } } },
    profileField, fields, h('div', { class: 'form-actions' }, submit,
      h('button', { type: 'button', class: 'secondary', text: 'Reset to fitted values', on: { click: () => { for (const i of Object.values(inputs)) i.value = ''; run(); } } })));
  const msg = h('p', { class: 'page-msg', role: 'status' });
  const result = h('div', { class: 'prediction', 'aria-live': 'polite' });
  const canvas = h('canvas', { id: 'throughput', role: 'img', 'aria-label': 'Line chart: devices per hour against the number of slots' });
  const chartMsg = h('p', { class: 'muted chart-note' });
  const chartCard = h('section', { class: 'card chart-card', 'aria-labelledby': 'thr-h', hidden: true },
    h('h2', { id: 'thr-h', text: 'Throughput against slots' }), h('div', { class: 'chart-box tall' }, canvas), chartMsg);
  root.append(h('section', { class: 'planner', 'aria-labelledby': 'plan-h' },
    h('header', { class: 'page-head' }, h('h1', { id: 'plan-h', text: 'Capacity planner' }),
      h('p', { class: 'lede', text: 'How long a run takes, and how many slots the room can use, predicted from the devices measured so far. Leave a field empty to use the value fitted from measurements.' })),
    h('div', { class: 'planner-layout' }, form, h('div', { class: 'planner-out' }, msg, result)), chartCard));

  function params() {
    const q = {};
    if (profileSel.value) q.profile = profileSel.value;
    for (const [name] of FIELDS) {
      const v = inputs[name].value.trim();
      if (v !== '') q[name] = v;
    }
    return q;
  }

  function clearErrors() {
    for (const [name] of FIELDS) {
      inputs[name].removeAttribute('aria-invalid');
      setText(errs[name], '');
    }
  }

  async function run() {
    clearErrors();
    const q = params();
    history.replaceState(null, '', `#/planner${Object.keys(q).length ? `?${new URLSearchParams(q)}` : ''}`);
    msg.className = 'page-msg';
    setText(msg, 'Predicting…');
    if (!(await hasEndpoint('GET', '/api/v1/capacity'))) {
      if (gone) return;
      msg.className = 'page-msg error';
      setText(msg, 'The capacity planner is not available on this server yet: it offers no capacity model (GET /api/v1/capacity).');
      result.replaceChildren();
      chartCard.hidden = true;
      return;
    }
    submit.disabled = true;
    let cap;
    try {
      cap = await api('/api/v1/capacity', { query: q });
    } catch (e) {
      if (gone) return;
      submit.disabled = false;
      msg.className = 'page-msg error';
      if (e instanceof ApiError && e.field && inputs[e.field]) {
        inputs[e.field].setAttribute('aria-invalid', 'true');
        setText(errs[e.field], e.message);
        inputs[e.field].focus();
      }
      setText(msg, `No prediction: ${e.text || e.message}`);
      return;
    }
    if (gone) return;
    submit.disabled = false;
    setText(msg, '');
    showResult(cap);
    chartCard.hidden = false;
    drawThroughput(cap, q).catch((e) => {
      if (!gone) setText(chartMsg, `The chart could not be drawn: ${e.text || e.message}`);
    });
  }

  function showResult(cap) {
    const p = cap.prediction || {};
    const b = cap.basis || {};
    const used = cap.query || {};
    // What the prediction assumed, as the fields' hints: an empty field shows the fitted value.
    for (const [name] of FIELDS) {
      const v = used[name];
      inputs[name].placeholder = v === null || v === undefined ? 'fitted' : `fitted: ${number(v, name.endsWith('share') ? 2 : 0).replace(/\s/g, '')}`;
    }
    const explain = Array.isArray(cap.explain) ? cap.explain : typeof cap.explain === 'string' ? [cap.explain] : [];
    const whatIf = Array.isArray(cap.what_if) ? cap.what_if : [];
    const rec = cap.recommended_slots;
    const model = cap.model && typeof cap.model === 'object' ? cap.model : {};
    fill(result,
      h('div', { class: 'kpis' },
        kpi('Per device', duration(p.per_device_s), 'first stage to the result'),
        kpi('Whole run', duration(p.makespan_s), `${number(p.devices ?? used.devices)} devices on ${number(p.slots ?? used.slots)} slots`),
        kpi('Devices per hour', number(p.devices_per_hour, 1)),
        kpi('ESP timeouts', number(p.esp_timeouts), p.esp_timeouts > 0 ? 'devices predicted to go red by the timeout' : 'none predicted', p.esp_timeouts > 0 ? 'bad' : 'ok'),
        p.green !== undefined ? kpi('Green / red', `${number(p.green)} / ${number(p.red)}`, 'red: every cause, the timeout included') : null,
        kpi('Recommended slots', rec === null || rec === undefined ? 'none' : number(rec), rec === null ? 'every slot count hits the ESP timeout' : cap.bound ? `the room is ${cap.bound}-bound` : '')),
      cap.bound ? h('p', { class: 'bound', text: BOUND_TEXT[cap.bound] || `Bound by ${cap.bound}.` }) : null,
      explain.length ? h('section', { 'aria-labelledby': 'why-h' }, h('h2', { id: 'why-h', text: 'Why' }),
        h('ul', { class: 'explain' }, explain.map((t) => h('li', { text: String(t) })))) : null,
      whatIf.length ? h('section', { 'aria-labelledby': 'whatif-h' }, h('h2', { id: 'whatif-h', text: 'What if' }),
        h('div', { class: 'table-wrap' }, h('table', { class: 'what-if' },
          h('thead', null, h('tr', null, ['If', 'Devices per hour', 'Whole run', 'ESP timeouts'].map((t, i) => h('th', { scope: 'col', class: i ? 'num' : null, text: t })))),
          h('tbody', null, whatIf.map((w) => {
            const wp = w.prediction || {};
            const gain = p.devices_per_hour ? wp.devices_per_hour / p.devices_per_hour - 1 : null;
            return h('tr', null, h('th', { scope: 'row', text: whatIfText(w) }),
              h('td', { class: 'num', text: `${number(wp.devices_per_hour, 1)}${gain !== null && Number.isFinite(gain) ? ` (${gain >= 0 ? '+' : ''}${(gain * 100).toFixed(0)} %)` : ''}` }),
              h('td', { class: 'num', text: duration(wp.makespan_s) }),
              h('td', { class: 'num', text: number(wp.esp_timeouts) }));
          }))))) : null,
      h('details', { class: 'basis' },
        h('summary', { text: `Fitted from ${number(b.samples)} devices (R² ${number(b.r2, 2)}, mean error ${duration(b.mae_s)})` }),
        dl(MODEL_LABELS.filter(([k]) => k in model).map(([k, label, kind]) => [label, modelValue(kind, model[k])])),
        b.method ? h('p', { class: 'muted', text: `Method: ${b.method}.` }) : null));
  }

  function kpi(label, value, sub, tone) {
    return h('div', { class: `kpi${tone ? ` ${tone}` : ''}` }, h('span', { class: 'kpi-label', text: label }), h('span', { class: 'kpi-value', text: value }),
      sub ? h('span', { class: 'kpi-sub', text: sub }) : null);
  }

  async function drawThroughput(cap, q) {
    let rows = Array.isArray(cap.throughput_by_slots) ? [...cap.throughput_by_slots].sort((a, b) => a.slots - b.slots) : null;
    if (!rows) {
      // One prediction per slot count, up to twice the larger of the chosen and recommended.
      const top = Math.max(8, 2 * Math.max(Number(q.slots) || 0, cap.recommended_slots || 0));
      const step = Math.max(1, Math.ceil(top / 16));
      const counts = [];
      for (let s = 1; s <= top; s += step) counts.push(s);
      rows = await Promise.all(counts.map((s) => api('/api/v1/capacity', { query: { ...q, slots: s } })
        .then((r) => ({ slots: s, devices_per_hour: r.prediction.devices_per_hour, esp_timeouts: r.prediction.esp_timeouts }))));
    }
    if (gone) return;
    let Chart;
    try {
      Chart = await loadChart();
    } catch (e) {
      fill(chartMsg, `Charts are unavailable: ${e.message}. `, rows.map((r) => `${r.slots} slots: ${number(r.devices_per_hour, 1)}/h`).join(', '));
      return;
    }
    if (gone) return;
    const c = palette();
    const rec = cap.recommended_slots;
    const chosen = Number(q.slots) || (cap.prediction && cap.prediction.slots) || null;
    if (chart) chart.destroy();
    chart = new Chart(canvas, {
      data: {
        datasets: [
          { type: 'line', label: 'Devices per hour', yAxisID: 'y', data: rows.map((r) => ({ x: r.slots, y: r.devices_per_hour })), borderColor: c.blue, backgroundColor: c.blue,
            pointRadius: rows.map((r) => (r.slots === rec ? 8 : r.slots === chosen ? 6 : 2)),
            pointStyle: rows.map((r) => (r.slots === rec ? 'rectRot' : r.slots === chosen ? 'rect' : 'circle')) },
          { type: 'bar', label: 'ESP timeouts', yAxisID: 'y2', data: rows.map((r) => ({ x: r.slots, y: r.esp_timeouts || 0 })), backgroundColor: c.vermillion, barThickness: 8 },
        ],
      },
      options: {
        ...baseOptions(Chart),
        parsing: false,
        scales: {
          x: { type: 'linear', title: { display: true, text: 'Slots' }, ticks: { precision: 0 } },
          y: { beginAtZero: true, title: { display: true, text: 'Devices per hour' } },
          y2: { beginAtZero: true, position: 'right', grid: { drawOnChartArea: false }, title: { display: true, text: 'ESP timeouts' }, ticks: { precision: 0 } },
        },
        plugins: { legend: { position: 'bottom' } },
      },
    });
    setText(chartMsg, `${rec ? `The diamond marks the recommended ${rec} slots` : 'No slot count avoids the ESP timeout'}${chosen ? `; the square, the ${chosen} slots of this prediction` : ''}. Bars count the devices predicted to hit the ESP timeout.`);
  }

  run();
  return () => {
    gone = true;
    if (chart) chart.destroy();
  };
}
