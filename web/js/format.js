// format: the words and numbers of the web view: statuses, stages, warnings, and how durations,
// sizes and times are written. The stage and warning texts follow the server's catalogue
// (server/src/domain/stage.c and catalogue.c); the API sends the warning codes only.

export const STATUSES = ['registered', 'provisioning', 'green', 'red', 'resealed', 'handover', 'delivered'];

export const STATUS_LABEL = {
  registered: 'Registered',
  provisioning: 'Provisioning',
  green: 'Green',
  red: 'Red',
  resealed: 'Resealed',
  handover: 'Handover',
  delivered: 'Delivered',
};

// What each status means to a technician, for titles and the legend.
export const STATUS_HINT = {
  registered: 'imported, not started yet',
  provisioning: 'in the technician flow',
  green: 'green screen: ready to reseal',
  red: 'red screen: needs a technician',
  resealed: 'resealed: ready to ship',
  handover: 'the user is signing in',
  delivered: 'the user reached the desktop',
};

// Stages in flow order: [id, name, flow].
export const STAGES = [
  ['oobe', 'Out-of-box experience', 'technician'],
  ['enterprise_provisioning', 'Provisioning menu', 'technician'],
  ['profile_download', 'Autopilot profile download', 'technician'],
  ['zdp_update', 'Zero-day updates', 'technician'],
  ['component_update', 'Autopilot component update', 'technician'],
  ['device_rename', 'Device rename', 'technician'],
  ['landing', 'Landing page', 'technician'],
  ['securing_hardware', 'Securing your hardware', 'technician'],
  ['joining_network', "Joining your organization's network", 'technician'],
  ['registering_mdm', 'Registering for mobile management', 'technician'],
  ['preparing_mdm', 'Preparing for mobile management', 'technician'],
  ['device_setup', 'Device setup', 'technician'],
  ['reseal', 'Reseal', 'technician'],
  ['user_oobe', 'User out-of-box experience', 'user'],
  ['user_signin', 'User sign-in', 'user'],
  ['account_setup', 'Account setup', 'user'],
  ['hello_provisioning', 'Windows Hello for Business', 'user'],
  ['desktop', 'Desktop', 'user'],
];

export const STAGE_NAME = Object.fromEntries(STAGES.map(([id, name]) => [id, name]));
export const STAGE_INDEX = Object.fromEntries(STAGES.map(([id], i) => [id, i]));
const TECH_STEPS = 12; // oobe .. device_setup: the steps up to the green or red screen
const USER_STEPS = 5;  // user_oobe .. desktop

export function stageName(id) {
  return id ? STAGE_NAME[id] || id : '—';
}

// How far a device is through its current flow: {step, of, fraction} or null.
export function progress(dev) {
  const i = STAGE_INDEX[dev.stage];
  if (i === undefined) return null;
  // A stage under way counts half; one that ended counts whole.
  const part = dev.stage_state === 'started' ? 0.5 : 1;
  if (i < TECH_STEPS) {
    return { step: i + 1, of: TECH_STEPS, fraction: Math.min(1, (i + part) / TECH_STEPS) };
  }
  if (i >= TECH_STEPS + 1) {
    const j = i - TECH_STEPS - 1;
    return { step: j + 1, of: USER_STEPS, fraction: Math.min(1, (j + part) / USER_STEPS) };
  }
  return { step: TECH_STEPS, of: TECH_STEPS, fraction: 1 };
}


export const WARNINGS = {
  component_update_error: {
    summary: 'Autopilot\'s component update showed "Something went wrong" (AUTOPILOTWHITEGLOVEUPDATE); the flow went on after Skip.',
    remedy: 'Nothing to do for this device. Put the fix (KB4505903) into the image so the next devices do not stop here.',
  },
  hybrid_join_unsupported: {
    summary: 'The profile asks for hybrid Azure AD join, which the technician flow does not do.',
    remedy: 'Expect the join in the user flow, with a second sign-in at Winlogon; or use an Azure AD join profile.',
  },
  virtual_machine: {
    summary: 'The agent reports a virtual machine; pre-provisioning needs physical hardware and will fail at Securing your hardware.',
    remedy: 'Take it off the bench before it holds a slot; provision physical devices only.',
  },
  tpm_not_2_0: {
    summary: 'The TPM is missing, older than 2.0, or cannot do attestation; Securing your hardware will fail.',
    remedy: 'Turn the TPM on and update its firmware to 2.0 before provisioning.',
  },
  not_imported: {
    summary: 'This serial was never imported from an Autopilot CSV.',
    remedy: 'Import the device\'s hardware hash (and check it is registered in Autopilot).',
  },
  out_of_order: {
    summary: 'A message carries an earlier device time than the one before it: the device clock went backwards. Nothing was lost.',
    remedy: 'Check the device\'s clock and time sync if its durations look wrong.',
  },
  user_flow_too_soon: {
    summary: 'The user flow began less than 90 minutes after reseal.',
    remedy: 'Wait at least 90 minutes after reseal before handing a device over; if sign-in fails, restart and try again later.',
  },
  reseal_expired: {
    summary: 'More than six months have passed since reseal; the management certificates may no longer be valid.',
    remedy: 'Reset the device and pre-provision it again before handover.',
  },
};

// 65 -> "1m 05s", 3725 -> "1h 02m", null -> "—"
export function duration(s) {
  if (s === null || s === undefined || !Number.isFinite(s)) return '—';
  const neg = s < 0;
  let t = Math.round(Math.abs(s));
  const d = Math.floor(t / 86400); t -= d * 86400;
  const hh = Math.floor(t / 3600); t -= hh * 3600;
  const mm = Math.floor(t / 60); const ss = t - mm * 60;
  const p = (n) => String(n).padStart(2, '0');
  let out;
  if (d > 0) out = `${d}d ${hh}h`;
  else if (hh > 0) out = `${hh}h ${p(mm)}m`;
  else if (mm > 0) out = `${mm}m ${p(ss)}s`;
  else out = `${ss}s`;
  return neg ? `-${out}` : out;
}


const UNITS = ['B', 'KB', 'MB', 'GB', 'TB'];
// Decimal units, as download sizes are usually given.
export function bytes(n) {
  if (n === null || n === undefined || !Number.isFinite(n)) return '—';
  let i = 0;
  let v = n;
  while (v >= 1000 && i < UNITS.length - 1) { v /= 1000; i++; }
  return `${i === 0 ? v : v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${UNITS[i]}`;
}

export function number(x, digits = 0) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '—';
  return x.toLocaleString(undefined, { maximumFractionDigits: digits, minimumFractionDigits: digits });
}

export function percent(x, digits = 1) {
  if (x === null || x === undefined || !Number.isFinite(x)) return '—';
  return `${(x * 100).toFixed(digits)} %`;
}

export function mbps(x) {
  return x === null || x === undefined ? '—' : `${number(x, x < 10 ? 1 : 0)} Mbit/s`;
}

// The Intl formatters are made on first use: making the first one loads the browser's locale
// data, which costs tens of milliseconds that the board's first screen does not need.
const formats = new Map();
function fmt(name, options) {
  let f = formats.get(name);
  if (!f) {
    f = new Intl.DateTimeFormat(undefined, options);
    formats.set(name, f);
  }
  return f;
}

export function dateTime(iso) {
  if (!iso) return '—';
  const t = Date.parse(iso);
  return Number.isNaN(t) ? String(iso) : fmt('dateTime', {
    year: 'numeric', month: 'short', day: '2-digit', hour: '2-digit', minute: '2-digit', second: '2-digit',
  }).format(t);
}


// "14:05" today, "Nov 25, 14:05" on another day; from milliseconds.
export function shortTime(ms) {
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString()
    ? fmt('hm', { hour: '2-digit', minute: '2-digit' }).format(d)
    : fmt('dayHm', { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }).format(d);
}

// "in 35m 10s" / "2h 05m ago", relative to now (ms).
export function relative(iso, now = Date.now()) {
  if (!iso) return '—';
  const t = Date.parse(iso);
  if (Number.isNaN(t)) return String(iso);
  const s = (t - now) / 1000;
  if (Math.abs(s) < 1) return 'now';
  return s > 0 ? `in ${duration(s)}` : `${duration(-s)} ago`;
}

// The strings of `list` in natural order ("A-2" before "A-10", case aside): plain string compares
// of keys whose digit runs are padded, each key made once, so the board needs no Intl.Collator.
const naturalKey = (s) => String(s).toLowerCase().replace(/\d+/g, (d) => d.replace(/^0+(?=\d)/, '').padStart(16, '0'));
export function naturalSort(list) {
  return list.map((s) => [naturalKey(s), s])
    .sort(([x, a], [y, b]) => (x !== y ? (x < y ? -1 : 1) : a < b ? -1 : a > b ? 1 : 0))
    .map(([, s]) => s);
}
