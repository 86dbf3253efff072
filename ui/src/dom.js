// Small DOM helpers: an element builder, formatting, toasts, buttons
// that run an API call, and tables of records kept up to date.

import { get } from './api.js';

export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  let value;
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value') value = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  add(el, children);
  // After the children, so a <select> has its options.
  if (value !== undefined) el.value = value;
  return el;
}

function add(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c != null && c !== false) el.append(c instanceof Node ? c : String(c));
  }
}

export function replace(el, ...children) {
  el.replaceChildren();
  add(el, children);
  return el;
}

export const card = (title, attrs, ...body) => h('section', { class: 'card', ...attrs }, title && h('h2', null, title), ...body);

export function bytes(n) {
  if (n == null) return '';
  const units = ['B', 'KiB', 'MiB', 'GiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function when(t) {
  if (!t) return '';
  const d = new Date(t);
  const s = (Date.now() - d.getTime()) / 1000;
  const rel = s < 60 ? 'just now' : s < 3600 ? `${Math.floor(s / 60)} min ago` : s < 86400 ? `${Math.floor(s / 3600)} h ago` : d.toLocaleDateString();
  return h('time', { datetime: d.toISOString(), title: d.toLocaleString() }, rel);
}

export const hex = (n) => (n == null ? '' : '0x' + n.toString(16).padStart(8, '0'));

export const badge = (state) => h('span', { class: `badge state-${state}`, dataset: { state } }, state);

export const empty = (cols, text) => h('tr', { class: 'empty' }, h('td', { colspan: cols }, text));

export function toast(message, kind = 'info') {
  const t = h('div', { class: `toast ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, message);
  document.getElementById('toasts').append(t);
  setTimeout(() => t.remove(), kind === 'error' ? 8000 : 3500);
}

// action runs fn for a button: disabled while it runs, errors shown as
// toasts (with the API's message), ok as a toast when given.
export async function action(button, fn, ok) {
  if (button) button.disabled = true;
  try {
    const v = await fn();
    if (ok) toast(ok, 'ok');
    return v;
  } catch (e) {
    toast(e.message || String(e), 'error');
    return undefined;
  } finally {
    if (button) button.disabled = false;
  }
}

export const button = (label, onclick, cls = '', attrs = {}) =>
  h('button', { type: 'button', class: cls, ...attrs, onclick: (e) => onclick(e.currentTarget) }, label);

export function field(label, control, hint) {
  return h('label', { class: 'field' }, h('span', null, label), control, hint && h('small', null, hint));
}

// copyable is a preformatted snippet with a copy button.
export function copyable(text, attrs) {
  const pre = h('pre', { class: 'snippet', ...attrs }, text);
  return h('div', { class: 'copyable' }, pre, button('Copy', async () => {
    try {
      await navigator.clipboard.writeText(text);
      toast('Copied', 'ok');
    } catch {
      getSelection().selectAllChildren(pre);
    }
  }, 'small ghost'));
}

// liveTable keeps a table body of records by id, newest first, as the
// server lists them (path answers {<key>: [...], total}) and as events
// update them; total says how many there are.
export function liveTable({ rows, total, cols, none, path, key, row }) {
  const byID = new Map();
  let more = 0; // how many the server has beyond the newest page shown
  function render() {
    const list = [...byID.values()].sort((a, b) => b.created_at.localeCompare(a.created_at));
    replace(rows, list.length ? list.map(row) : empty(cols, none));
    total.textContent = more > 0 ? `newest ${list.length} of ${list.length + more}` : `${list.length} in all`;
  }
  return {
    update(x) {
      if (x?.id) byID.set(x.id, x);
      render();
    },
    remove(id) {
      byID.delete(id);
      render();
    },
    async load() {
      try {
        const r = await get(path);
        byID.clear();
        for (const x of r[key]) byID.set(x.id, x);
        more = r.total - r[key].length;
        render();
      } catch (e) {
        replace(rows, empty(cols, e.message));
      }
    },
  };
}
