// handover: the printable handover record of one device, built from its detail and profile, and
// its audit trail when the server offers one (GET /api/v1/devices/{serial}/audit). The print
// style sheet drops the navigation, so what prints is the record alone.

import { h, fill, dl, setText } from './dom.js';
import { api, enc, hasEndpoint } from './api.js';
import { STATUS_LABEL, stageName, duration, bytes, dateTime } from './format.js';
import { profiles } from './profiles.js';
import { actionDetail } from './device.js';

export function mountHandover(root, { params }) {
  const serial = params[0];
  let gone = false;
  const status = h('p', { class: 'page-msg', role: 'status', text: 'Loading…' });
  const body = h('div', { class: 'record-body' });
  const audit = h('section', { class: 'audit', 'aria-labelledby': 'audit-h' }, h('h2', { id: 'audit-h', text: 'Audit trail' }));
  root.append(h('article', { class: 'handover', 'aria-labelledby': 'ho-h' },
    h('p', { class: 'crumbs no-print' }, h('a', { href: '#/board', text: 'Board' }), ' › ',
      h('a', { href: `#/device/${enc(serial)}`, text: serial }), ' › ', 'Handover record'),
    h('header', { class: 'page-head' },
      h('h1', { id: 'ho-h' }, 'Handover record ', h('span', { class: 'serial', text: serial })),
      h('p', { class: 'no-print' }, h('button', { type: 'button', text: 'Print', on: { click: () => window.print() } }))),
    status, body, audit));

  (async () => {
    let d;
    try {
      d = await api(`/api/v1/devices/${enc(serial)}`);
    } catch (e) {
      if (!gone) {
        status.className = 'page-msg error';
        setText(status, e.status === 404 ? `No device has the serial ${serial}.` : `The device could not be loaded: ${e.text || e.message}`);
      }
      return;
    }
    let prof = null;
    try {
      const list = await profiles();
      prof = d.profile ? list.find((p) => p.name === d.profile) || null : null;
    } catch {
      prof = null; // the record still prints without the organization
    }
    if (gone) return;
    setText(status, `Prepared ${dateTime(new Date().toISOString())}.`);
    const hw = d.hardware || {};
    const du = d.durations || {};
    const installed = (d.apps || []).filter((a) => a.state === 'installed');
    const failedAttempts = (d.attempts || []).filter((a) => a.outcome === 'red');
    fill(body,
      h('section', { 'aria-labelledby': 'ho-dev' }, h('h2', { id: 'ho-dev', text: 'Device' }), dl([
        ['Serial', d.serial],
        ['Hardware', [hw.manufacturer, hw.model].filter(Boolean).join(' ') || null],
        ['Windows build', d.os_build],
        ['Organization', prof ? prof.tenant_domain : null],
        ['Deployment profile', d.profile],
        ['Assigned user', d.assigned_user || (prof ? prof.assigned_user : null)],
      ])),
      h('section', { 'aria-labelledby': 'ho-prov' }, h('h2', { id: 'ho-prov', text: 'Pre-provisioning' }), dl([
        ['Status', STATUS_LABEL[d.status] || d.status],
        ['Attempts', d.attempt],
        ['First time right', d.first_time_right ? 'yes' : 'no'],
        ['Device preparation', duration(du.device_preparation_s)],
        ['Device setup', duration(du.device_setup_s)],
        ['Downloaded', bytes(d.bytes_downloaded)],
        ['Resealed', d.resealed_at ? dateTime(d.resealed_at) : 'not resealed'],
        ['Ready for the user from', d.ready_for_user_at ? dateTime(d.ready_for_user_at) : null],
        ['Hand over before', d.reseal_expires_at ? dateTime(d.reseal_expires_at) : null],
      ])),
      h('section', { 'aria-labelledby': 'ho-apps' }, h('h2', { id: 'ho-apps', text: 'Installed apps' }),
        installed.length ? h('ul', null, installed.map((a) => h('li', { text: `${a.name}${a.bytes ? ` (${bytes(a.bytes)})` : ''}` })))
          : h('p', { class: 'muted', text: 'None reported.' })),
      failedAttempts.length ? h('section', { 'aria-labelledby': 'ho-fail' }, h('h2', { id: 'ho-fail', text: 'Earlier failures' }),
        h('ul', null, failedAttempts.map((a) => h('li', null, `Attempt ${a.attempt}: `,
          a.diagnosis ? `${a.diagnosis.code} at ${stageName(a.diagnosis.stage)}` : 'red screen')))) : null,
      h('section', { 'aria-labelledby': 'ho-act' }, h('h2', { id: 'ho-act', text: 'Technician actions' }),
        d.actions && d.actions.length ? h('ol', null, d.actions.map((a) => h('li', null,
          `${dateTime(a.at)}: ${a.action} by ${a.actor || 'someone'}${actionDetail(a) ? ` — ${actionDetail(a)}` : ''}`)))
          : h('p', { class: 'muted', text: d.actions === null ? 'Not available (the database did not answer).' : 'None.' })));

    if (!(await hasEndpoint('GET', '/api/v1/devices/{serial}/audit'))) {
      if (!gone) audit.append(h('p', { class: 'muted not-available', text: 'The audit trail is not available on this server yet.' }));
      return;
    }
    try {
      const a = await api(`/api/v1/devices/${enc(serial)}/audit`);
      if (gone) return;
      const entries = a.entries || [];
      audit.append(...[
        h('p', { class: a.verified ? 'ok' : 'bad', text: a.verified ? 'The hash chain verifies: no entry was changed or removed.'
          : `The hash chain does NOT verify: ${a.problem ? a.problem.message : 'an entry was changed or removed'}${a.problem && a.problem.seq ? ` (entry ${a.problem.seq})` : ''}.` }),
        a.head ? h('p', null, 'Head hash, to verify this record later: ', h('code', { class: 'hash', text: a.head })) : null,
        entries.length === 0 ? h('p', { class: 'muted', text: 'No entry.' }) :
          h('div', { class: 'table-wrap' }, h('table', null,
            h('thead', null, h('tr', null, ['When', 'Who', 'What', 'Detail', 'Hash'].map((t) => h('th', { scope: 'col', text: t })))),
            h('tbody', null, entries.map((e) => h('tr', null,
              h('td', { text: dateTime(e.at) }), h('td', { text: e.actor || '' }), h('td', { text: e.action || '' }),
              h('td', { text: typeof e.detail === 'string' ? e.detail : e.detail ? JSON.stringify(e.detail) : '' }),
              h('td', null, h('code', { class: 'hash', text: (e.hash || '').slice(0, 16) }))))))),
      ].filter(Boolean));
    } catch (e) {
      if (!gone) audit.append(h('p', { class: 'error', text: `The audit trail could not be loaded: ${e.text || e.message}` }));
    }
  })();

  return () => { gone = true; };
}
