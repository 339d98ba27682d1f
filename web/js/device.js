// device: one device's story. Identity and the landing screen as the technician saw it, the
// diagnosis with its remedy, warnings, a timeline of stages per attempt, apps, where the bytes
// came from, the reseal clocks, the stored messages (paged) and the technician's actions. The
// page follows the live stream: when this device changes, its detail is fetched again (at most
// once a second) and the read-only parts are redrawn; the action forms keep what is typed.

import { h, icon, fill, dl, setText, append } from './dom.js';
import { api, enc, ApiError } from './api.js';
import {
  STATUS_LABEL, stageName, WARNINGS, duration, bytes, number, percent, mbps, dateTime, relative, progress,
} from './format.js';
import { profiles } from './profiles.js';

const EVENTS_PAGE = 50;

export function statusBadge(d) {
  return h('span', { class: 'badge', dataset: { status: d.status } },
    icon(d.status), STATUS_LABEL[d.status] || d.status);
}

export function stalledBadge(d) {
  return d.stalled ? h('span', { class: 'badge stalled-badge', title: 'No message from this device for longer than the stall timeout' }, 'Stalled') : null;
}

export function mountDevice(root, { store, me, params }) {
  const serial = params[0];
  let detail = null;
  let refetchTimer = 0;
  let lastFetch = 0;
  let gone = false;
  let clockTimer = 0;

  const head = h('header', { class: 'page-head' });
  const main = h('div', { class: 'device-body' });
  const actionsCard = h('section', { class: 'card actions', 'aria-labelledby': 'actions-h' });
  const eventsCard = h('section', { class: 'card events', 'aria-labelledby': 'events-h' });
  const status = h('p', { class: 'page-msg', role: 'status', text: 'Loading…' });
  root.append(h('article', { class: 'device', 'aria-labelledby': 'device-h' }, head, status, main, actionsCard, eventsCard));

  async function fetchDetail() {
    lastFetch = Date.now();
    try {
      const d = await api(`/api/v1/devices/${enc(serial)}`);
      if (gone) return;
      detail = d;
      setText(status, '');
      status.className = 'page-msg';
      render();
    } catch (e) {
      if (gone) return;
      status.className = 'page-msg error';
      if (e instanceof ApiError && e.status === 404) {
        setText(status, `No device has the serial ${serial}.`);
        fill(head, h('h1', { id: 'device-h', text: serial }));
        main.replaceChildren();
        actionsCard.replaceChildren();
        eventsCard.replaceChildren();
      } else {
        setText(status, `The device could not be loaded: ${e.text || e.message}`);
      }
    }
  }

  function scheduleRefetch() {
    if (refetchTimer) return;
    const wait = Math.max(0, 1000 - (Date.now() - lastFetch));
    refetchTimer = setTimeout(() => {
      refetchTimer = 0;
      fetchDetail().then(() => events.onDeviceChanged());
    }, wait);
  }

  function render() {
    const d = detail;
    const p = progress(d);
    fill(head,
      h('p', { class: 'crumbs' }, h('a', { href: '#/board', text: 'Board' }), ' › ', 'Device'),
      h('h1', { id: 'device-h' }, h('span', { class: 'serial', text: d.serial }), ' ', statusBadge(d), ' ', stalledBadge(d)),
      h('p', { class: 'lede' },
        d.stage ? `${stageName(d.stage)} ${d.stage_state || ''}` : 'No stage reported yet',
        p && (d.status === 'provisioning' || d.status === 'handover') ? ` · step ${p.step} of ${p.of}` : '',
        ` · attempt ${d.attempt || 1}`,
        d.slot ? ` · slot ${d.slot}` : ' · no slot',
        d.last_seen ? ` · last seen ${dateTime(d.last_seen)}` : ''),
      h('p', { class: 'head-links' },
        h('a', { href: `#/handover/${enc(d.serial)}`, class: 'button-link', text: 'Handover record' })));

    fill(main,
      diagnosisSection(d),
      h('div', { class: 'cards' },
        landingCard(d),
        identityCard(d),
        clocksCard(d),
        durationsCard(d),
        bytesCard(d),
        warningsCard(d)),
      timelineSection(d),
      appsSection(d));
    renderActions();
  }

  function diagnosisSection(d) {
    const current = d.diagnosis;
    const past = (d.attempts || []).filter((a) => a.diagnosis && a.attempt !== d.attempt);
    if (!current && past.length === 0) return null;
    return h('section', { class: `diagnosis${current ? '' : ' past-only'}`, 'aria-labelledby': 'diag-h' },
      h('h2', { id: 'diag-h', text: current ? 'Diagnosis' : 'Earlier diagnoses' }),
      current ? [
        h('p', { class: 'diag-code' }, h('code', { text: current.code }),
          current.stage ? ` at ${stageName(current.stage)}` : '',
          current.hresult ? h('span', null, ' · HRESULT ', h('code', { text: current.hresult })) : ''),
        h('p', { class: 'diag-summary', text: current.summary }),
        h('div', { class: 'remedy' }, h('h3', { text: 'Remedy' }), h('p', { class: 'diag-remedy', text: current.remedy })),
      ] : null,
      past.length ? h('ul', { class: 'past' }, past.map((a) => h('li', null,
        `Attempt ${a.attempt}: `, h('code', { text: a.diagnosis.code }), ` — ${a.diagnosis.summary}`))) : null);
  }

  function landingCard(d) {
    const card = h('section', { class: 'card', 'aria-labelledby': 'landing-h' },
      h('h2', { id: 'landing-h', text: 'Landing screen' }));
    const body = h('div', null, h('p', { class: 'muted', text: 'Loading the profile…' }));
    card.append(body);
    profiles().then((list) => {
      const prof = d.profile ? list.find((x) => x.name === d.profile) : null;
      fill(body,
        dl([
          ['Organization', prof ? prof.tenant_domain : null],
          ['Deployment profile', d.profile],
          ['Assigned user', d.assigned_user || (prof ? prof.assigned_user : null)],
        ], 'facts landing'),
        !d.profile ? h('p', { class: 'muted', text: d.group_tag ? `No profile has the group tag "${d.group_tag}".` : 'The device has no group tag, so no profile applies.' }) : null,
        prof && prof.join === 'hybrid' ? h('p', { class: 'warn-text', text: 'This profile asks for hybrid Azure AD join, which the technician flow does not perform.' }) : null);
    }).catch((e) => {
      fill(body, h('p', { class: 'error', text: `Profiles could not be loaded: ${e.text || e.message}` }),
        dl([['Deployment profile', d.profile], ['Assigned user', d.assigned_user]], 'facts landing'));
    });
    return card;
  }

  function identityCard(d) {
    const hw = d.hardware || {};
    const net = d.network || {};
    const tri = (v) => (v === true ? 'yes' : v === false ? 'no' : null);
    return h('section', { class: 'card', 'aria-labelledby': 'id-h' },
      h('h2', { id: 'id-h', text: 'Identity' }),
      dl([
        ['Serial', d.serial],
        ['Hardware', [hw.manufacturer, hw.model].filter(Boolean).join(' ') || null],
        ['TPM', hw.tpm_version ? `${hw.tpm_version}${hw.tpm_attestation === false ? ', no attestation' : hw.tpm_attestation ? ', attestation' : ''}` : null],
        ['Virtual machine', tri(hw.virtual_machine)],
        ['Network', net.medium ? `${net.medium}${net.link_mbps ? `, ${mbps(net.link_mbps)}` : ''}` : null],
        ['Windows build', d.os_build],
        ['Agent', d.agent],
        ['Group tag', d.group_tag],
        ['Imported', d.imported ? 'yes' : 'no'],
        ['First seen', d.first_seen ? dateTime(d.first_seen) : null],
        ['Messages', d.messages !== undefined ? number(d.messages) : null],
      ]));
  }

  function clocksCard(d) {
    const body = h('div');
    const draw = () => {
      if (!d.resealed_at) {
        fill(body, h('p', { class: 'muted', text: 'Not resealed yet. Once resealed, the user flow may start 90 minutes later and should start within six months.' }));
        return;
      }
      const now = Date.now();
      const ready = Date.parse(d.ready_for_user_at);
      const expires = Date.parse(d.reseal_expires_at);
      fill(body, dl([
        ['Resealed', dateTime(d.resealed_at)],
        ['Ready for the user', h('span', { class: ready <= now ? 'ok' : 'wait' },
          `${dateTime(d.ready_for_user_at)} (${ready <= now ? 'ready, since ' + relative(d.ready_for_user_at, now).replace(' ago', '') : relative(d.ready_for_user_at, now)})`)],
        ['Reseal expires', h('span', { class: expires <= now ? 'bad' : '' },
          `${dateTime(d.reseal_expires_at)} (${expires <= now ? 'expired ' + relative(d.reseal_expires_at, now) : relative(d.reseal_expires_at, now)})`)],
      ], 'facts clocks'));
    };
    draw();
    clearInterval(clockTimer);
    clockTimer = setInterval(draw, 30000);
    return h('section', { class: 'card', 'aria-labelledby': 'clocks-h' }, h('h2', { id: 'clocks-h', text: 'Reseal clocks' }), body);
  }

  function durationsCard(d) {
    const du = d.durations || {};
    return h('section', { class: 'card', 'aria-labelledby': 'dur-h' },
      h('h2', { id: 'dur-h', text: 'ESP durations' }),
      dl([
        ['Device preparation', duration(du.device_preparation_s)],
        ['Device setup', duration(du.device_setup_s)],
        ['Account setup', duration(du.account_setup_s)],
        ['Total', duration(du.total_s)],
        ['First time right', d.first_time_right ? 'yes' : d.status === 'green' || d.status === 'resealed' || d.status === 'handover' || d.status === 'delivered' ? 'no' : '—'],
      ]));
  }

  function bytesCard(d) {
    const src = d.bytes_by_source || { http: 0, lan: 0, cache: 0 };
    const total = (src.http || 0) + (src.lan || 0) + (src.cache || 0);
    const parts = [['http', 'Internet (HTTP)'], ['lan', 'LAN peers'], ['cache', 'Connected Cache']];
    const bar = h('div', { class: 'stack', role: 'img', 'aria-label': parts.map(([k, l]) => `${l} ${total ? percent(src[k] / total, 0) : '0 %'}`).join(', ') },
      parts.map(([k]) => h('span', { class: `seg seg-${k}`, vars: { '--w': total ? (src[k] / total).toFixed(4) : 0 } })));
    return h('section', { class: 'card', 'aria-labelledby': 'bytes-h' },
      h('h2', { id: 'bytes-h', text: 'Bytes by source' }),
      total ? bar : null,
      h('ul', { class: 'legend' }, parts.map(([k, l]) => h('li', null,
        h('span', { class: `swatch seg-${k}`, 'aria-hidden': 'true' }), `${l}: ${bytes(src[k] || 0)}${total ? ` (${percent(src[k] / total, 0)})` : ''}`))),
      dl([['Downloaded', bytes(d.bytes_downloaded)], ['Mean bandwidth', mbps(d.mean_mbps)]]));
  }

  function warningsCard(d) {
    const w = d.warnings || [];
    return h('section', { class: 'card', 'aria-labelledby': 'warn-h' },
      h('h2', { id: 'warn-h', text: `Warnings${w.length ? ` (${w.length})` : ''}` }),
      w.length === 0 ? h('p', { class: 'muted', text: 'None.' }) :
        h('ul', { class: 'warnings' }, w.map((code) => {
          const info = WARNINGS[code];
          return h('li', null, h('code', { text: code }),
            info ? h('p', { text: info.summary }) : null,
            info ? h('p', { class: 'muted', text: info.remedy }) : null);
        })));
  }

  // A Gantt chart per attempt: one row per stage run, the bar placed on the attempt's own time
  // axis (CSS custom properties carry the offsets; no inline styles).
  function timelineSection(d) {
    const runs = d.timeline || [];
    const section = h('section', { class: 'timeline', 'aria-labelledby': 'tl-h' }, h('h2', { id: 'tl-h', text: 'Timeline' }));
    if (runs.length === 0) {
      section.append(h('p', { class: 'muted', text: 'No stage reported yet.' }));
      return section;
    }
    const byAttempt = new Map();
    for (const r of runs) {
      if (!byAttempt.has(r.attempt)) byAttempt.set(r.attempt, []);
      byAttempt.get(r.attempt).push(r);
    }
    const outcomes = new Map((d.attempts || []).map((a) => [a.attempt, a]));
    for (const [attempt, list] of byAttempt) {
      const starts = list.map((r) => Date.parse(r.started_at)).filter(Number.isFinite);
      const ends = list.map((r) => (r.ended_at ? Date.parse(r.ended_at) : Date.parse(r.started_at) + (r.duration_s || 0) * 1000)).filter(Number.isFinite);
      const t0 = Math.min(...starts);
      const t1 = Math.max(...ends, t0 + 1000);
      const span = t1 - t0;
      const a = outcomes.get(attempt);
      const outcome = a && a.outcome ? ` · ended ${a.outcome}` : '';
      const rows = list.map((r) => {
        const s = Date.parse(r.started_at);
        const e = r.ended_at ? Date.parse(r.ended_at) : s + (r.duration_s || 0) * 1000;
        const left = Number.isFinite(s) ? (s - t0) / span : 0;
        const width = Number.isFinite(e) && Number.isFinite(s) ? Math.max(0, e - s) / span : 0;
        const state = r.state || 'started';
        return h('li', { class: 'g-row', dataset: { state } },
          h('span', { class: 'g-name', text: r.name || stageName(r.stage) }),
          h('span', { class: 'g-track' },
            h('span', { class: 'g-bar', vars: { '--l': left.toFixed(4), '--w': width.toFixed(4) }, title: `${r.name || r.stage}: ${state}, ${duration(r.duration_s)}${r.hresult ? `, ${r.hresult}` : ''}` })),
          h('span', { class: 'g-dur' }, duration(r.duration_s), ' ', h('span', { class: 'g-state', text: state === 'succeeded' ? '' : state }),
            r.hresult ? h('code', { class: 'g-hr', text: r.hresult }) : null));
      });
      section.append(h('div', { class: 'gantt' },
        h('h3', null, `Attempt ${attempt}`, h('span', { class: 'muted', text: ` · from ${dateTime(new Date(t0).toISOString())}, ${duration(span / 1000)}${outcome}` })),
        h('ol', { class: 'g-rows' }, rows)));
    }
    return section;
  }

  function appsSection(d) {
    const apps = d.apps || [];
    return h('section', { class: 'apps', 'aria-labelledby': 'apps-h' },
      h('h2', { id: 'apps-h', text: `Apps${apps.length ? ` (${apps.length})` : ''}` }),
      apps.length === 0 ? h('p', { class: 'muted', text: 'No app reported.' }) :
        h('div', { class: 'table-wrap' }, h('table', null,
          h('thead', null, h('tr', null, ['App', 'State', 'Size', 'HRESULT'].map((t) => h('th', { scope: 'col', text: t })))),
          h('tbody', null, apps.map((a) => h('tr', { dataset: { state: a.state || '' } },
            h('td', { text: a.name }), h('td', { class: `app-state ${a.state || ''}`, text: a.state || '—' }),
            h('td', { class: 'num', text: bytes(a.bytes) }), h('td', null, a.hresult ? h('code', { text: a.hresult }) : '—')))))));
  }

  // Actions: built once (so typed text survives redraws); the parts that depend on the device
  // are updated by renderActions.
  const canAct = me && (me.role === 'technician' || me.role === 'admin');
  const feedback = h('p', { class: 'feedback', role: 'status', 'aria-live': 'polite' });
  const retryBtn = h('button', { type: 'button', text: 'Retry', on: { click: () => act({ action: 'retry' }, 'Retry recorded: the next attempt is open.') } });
  const retryHelp = h('p', { class: 'help' });
  const noteText = h('textarea', { id: 'note-text', rows: '2', maxlength: '2000', placeholder: 'What you saw or did' });
  const noteForm = h('form', { class: 'inline-form', on: { submit: (e) => {
    e.preventDefault();
    const text = noteText.value.trim();
    if (!text) { showFeedback('Write the note first.', true); noteText.focus(); return; }
    act({ action: 'note', text }, 'Note added.').then((ok) => { if (ok) noteText.value = ''; });
  } } }, h('label', { for: 'note-text', text: 'Note' }), noteText, h('button', { type: 'submit', text: 'Add note' }));
  const slotInput = h('input', { id: 'slot-input', type: 'text', maxlength: '32', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. A-12' });
  const slotForm = h('form', { class: 'inline-form', on: { submit: (e) => {
    e.preventDefault();
    const slot = slotInput.value.trim();
    if (!slot) { showFeedback('Type a slot, or use "Clear slot".', true); slotInput.focus(); return; }
    act({ action: 'assign_slot', slot }, `Slot ${slot} assigned.`).then((ok) => { if (ok) slotInput.value = ''; });
  } } }, h('label', { for: 'slot-input', text: 'Slot' }), slotInput, h('button', { type: 'submit', text: 'Assign slot' }),
  h('button', { type: 'button', class: 'secondary', text: 'Clear slot', on: { click: () => act({ action: 'assign_slot', slot: null }, 'Slot cleared.') } }));
  const historyEl = h('div', { class: 'history' });
  append(actionsCard, [h('h2', { id: 'actions-h', text: 'Technician actions' }),
    canAct ? null : h('p', { class: 'muted', text: `Signed in as ${me ? me.role : 'nobody'}: actions need a technician or admin token.` }),
    h('div', { class: 'action-row' }, retryBtn, retryHelp), noteForm, slotForm, feedback, h('h3', { text: 'History' }), historyEl]);

  // bad: true (refused), false (done) or null (under way: neither colour).
  function showFeedback(text, bad) {
    feedback.className = bad === null ? 'feedback' : `feedback ${bad ? 'error' : 'ok'}`;
    feedback.setAttribute('role', bad ? 'alert' : 'status');
    setText(feedback, text);
  }

  async function act(body, okText) {
    if (!canAct) return false;
    for (const b of actionsCard.querySelectorAll('button')) b.disabled = true;
    showFeedback('Sending…', null);
    try {
      const d = await api(`/api/v1/devices/${enc(serial)}/actions`, { method: 'POST', body });
      if (gone) return true;
      detail = d;
      render();
      showFeedback(okText, false);
      return true;
    } catch (e) {
      if (!gone) {
        showFeedback(e instanceof ApiError && e.status === 409 ? `Not done: ${e.message}.` : `Not done: ${e.text || e.message}`, true);
        renderActions();
      }
      return false;
    }
  }

  function renderActions() {
    const d = detail;
    if (!d) return;
    for (const b of actionsCard.querySelectorAll('button')) b.disabled = !canAct;
    retryBtn.disabled = !canAct || d.status !== 'red';
    setText(retryHelp, d.status === 'red' ? 'Opens the next attempt after you reset the device.' : 'Retry is for a device on the red screen.');
    slotInput.placeholder = d.slot ? `now ${d.slot}` : 'e.g. A-12';
    if (d.actions === null) {
      fill(historyEl, h('p', { class: 'muted', text: 'The history could not be read (the database did not answer).' }));
    } else if (!d.actions || d.actions.length === 0) {
      fill(historyEl, h('p', { class: 'muted', text: 'No action yet.' }));
    } else {
      fill(historyEl, h('ol', { class: 'action-list', reversed: true }, d.actions.map((a) => h('li', null,
        h('time', { datetime: a.at, text: dateTime(a.at) }), ' ', h('strong', { text: a.action }), ` by ${a.actor || 'someone'}`,
        actionDetail(a) ? h('span', { class: 'detail', text: `: ${actionDetail(a)}` }) : null))));
    }
  }

  const events = eventsList(eventsCard, serial, () => gone);

  const unsubscribe = store.subscribe(({ changed }) => {
    if (changed.has(serial)) scheduleRefetch();
  });
  fetchDetail();
  events.loadMore();

  return () => {
    gone = true;
    unsubscribe();
    clearTimeout(refetchTimer);
    clearInterval(clockTimer);
  };
}

// What an action did, in words: a note's text, the slot assigned.
export function actionDetail(a) {
  const d = a.detail;
  if (d === null || d === undefined || d === '') return '';
  if (typeof d === 'string') return d;
  if (typeof d === 'object') {
    if (a.action === 'note' && typeof d.text === 'string') return `“${d.text}”`;
    if (a.action === 'assign_slot' && 'slot' in d) return d.slot ? `slot ${d.slot}` : 'slot cleared';
    if (a.action === 'retry' && d.attempt) return `attempt ${d.attempt} opened`;
  }
  return JSON.stringify(d);
}

// What a stored message says, in one line.
function describe(ev) {
  const m = ev.message || {};
  switch (ev.type) {
    case 'hello': {
      const hw = m.hardware || {};
      return [`agent ${m.agent || '?'}`, [hw.manufacturer, hw.model].filter(Boolean).join(' '), m.slot ? `slot ${m.slot}` : '', m.network ? `${m.network.medium || ''}` : '']
        .filter(Boolean).join(' · ');
    }
    case 'stage':
      return `${stageName(m.stage)} ${m.state || ''}${m.hresult ? ` (${m.hresult})` : ''}`;
    case 'app':
      return `${m.name || 'app'} ${m.state || ''}${m.bytes ? `, ${bytes(m.bytes)}` : ''}${m.hresult ? ` (${m.hresult})` : ''}`;
    case 'download': {
      const rate = m.ms > 0 ? (m.bytes * 8) / (m.ms * 1000) : null;
      return `${bytes(m.bytes)} in ${duration((m.ms || 0) / 1000)}${rate !== null ? ` (${mbps(rate)})` : ''}`;
    }
    case 'winevent':
      return `${(m.channel || '').replace(/^Microsoft-Windows-/, '')} ${m.event_id ?? ''}: ${m.message || ''}`;
    case 'result':
      return `${m.screen || '?'} screen`;
    case 'heartbeat':
      return 'heartbeat';
    default:
      return ev.type;
  }
}

// The stored messages in seq order, a page at a time. Once the last page is in, new messages of
// a live device are fetched as it changes.
function eventsList(card, serial, isGone) {
  let after = 0;
  let done = false;
  let busy = false;
  const body = h('tbody');
  const more = h('button', { type: 'button', class: 'secondary', text: 'Load more', on: { click: () => loadMore() } });
  const note = h('p', { class: 'muted', role: 'status' });
  card.append(h('h2', { id: 'events-h', text: 'Messages' }),
    h('div', { class: 'table-wrap' }, h('table', { class: 'events-table' },
      h('thead', null, h('tr', null, ['Seq', 'Device time', 'Type', 'What'].map((t) => h('th', { scope: 'col', text: t })))),
      body)), note, more);

  async function loadMore() {
    if (busy) return;
    busy = true;
    more.disabled = true;
    try {
      const page = await api(`/api/v1/devices/${enc(serial)}/events`, { query: { after_seq: after, limit: EVENTS_PAGE } });
      if (isGone()) return;
      for (const ev of page.events) {
        body.append(h('tr', { dataset: { type: ev.type } },
          h('td', { class: 'num', text: ev.seq }),
          h('td', null, h('time', { datetime: ev.at, text: dateTime(ev.at) })),
          h('td', { text: ev.type }),
          h('td', null, h('details', null, h('summary', { text: describe(ev) }), h('pre', { text: JSON.stringify(ev.message, null, 2) })))));
        after = Math.max(after, ev.seq);
      }
      note.className = 'muted';
      done = page.next_after_seq === null;
      if (page.next_after_seq !== null) after = page.next_after_seq;
      setText(note, body.childElementCount === 0 ? 'No message stored.' : done ? `All ${body.childElementCount} messages shown.` : `${body.childElementCount} messages shown.`);
      more.hidden = done;
    } catch (e) {
      if (!isGone()) {
        note.className = 'error';
        setText(note, `Messages could not be loaded: ${e.text || e.message}`);
      }
    } finally {
      busy = false;
      more.disabled = false;
    }
  }

  return {
    loadMore,
    onDeviceChanged() {
      if (done) loadMore();
    },
  };
}
