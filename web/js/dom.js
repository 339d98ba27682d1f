// dom: small helpers that build DOM nodes. Text always goes in as text nodes (never as HTML), so
// a string from the server cannot become markup; attributes are set one by one.

// h('a', {href: '#/board', class: 'x', dataset: {k: 'v'}, on: {click: fn}}, 'text', child, ...)
// Children may be strings, numbers, nodes, null/undefined/false (skipped) or arrays of those.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'dataset') Object.assign(el.dataset, v);
      else if (k === 'on') for (const [ev, fn] of Object.entries(v)) el.addEventListener(ev, fn);
      else if (k === 'text') el.textContent = v;
      else if (k === 'vars') for (const [name, val] of Object.entries(v)) el.style.setProperty(name, String(val));
      else if (v === true) el.setAttribute(k, '');
      else el.setAttribute(k, String(v));
    }
  }
  append(el, children);
  return el;
}

export function append(el, children) {
  for (const c of children) {
    if (c === undefined || c === null || c === false) continue;
    if (Array.isArray(c)) append(el, c);
    else if (c instanceof Node) el.appendChild(c);
    else el.appendChild(document.createTextNode(String(c)));
  }
  return el;
}

const SVG_NS = 'http://www.w3.org/2000/svg';

// A status icon (or any symbol of index.html's sprite): <svg class="ico"><use href="#i-NAME">,
// drawn in the current colour, hidden from assistive technology (the status is always written
// next to it).
export function icon(name, className) {
  const svg = document.createElementNS(SVG_NS, 'svg');
  svg.setAttribute('class', className ? `ico ${className}` : 'ico');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  const use = document.createElementNS(SVG_NS, 'use');
  use.setAttribute('href', `#i-${name}`);
  svg.append(use);
  return svg;
}

// Replaces el's children with the given ones.
export function fill(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

// Sets textContent only when it differs (a cheap way to avoid needless DOM writes).
export function setText(el, text) {
  const s = text === undefined || text === null ? '' : String(text);
  if (el.textContent !== s) el.textContent = s;
}

// A definition list from [term, value] pairs; a value of null/undefined shows as a dash.
export function dl(pairs, className) {
  const list = h('dl', { class: className || 'facts' });
  for (const [term, value] of pairs) {
    list.append(h('dt', null, term), h('dd', null, value === null || value === undefined || value === '' ? '—' : value));
  }
  return list;
}
