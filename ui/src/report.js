// The coverage report's HTML form is a zip of pages (index.html and one
// per file). It is read here with the browser's own DecompressionStream
// and shown in a dialog: each page in a sandboxed frame (no scripts), its
// links between pages followed inside the dialog.

import { call, download } from './api.js';
import { h, button, toast } from './dom.js';

// unzip returns a zip's files by name (stored or deflated entries).
export async function unzip(buf) {
  const dv = new DataView(buf);
  let end = -1;
  for (let i = buf.byteLength - 22; i >= Math.max(0, buf.byteLength - 65557); i--) {
    if (dv.getUint32(i, true) === 0x06054b50) { end = i; break; }
  }
  if (end < 0) throw new Error('the report is not a zip archive');
  const files = new Map();
  const names = new TextDecoder();
  let at = dv.getUint32(end + 16, true);
  for (let n = dv.getUint16(end + 10, true); n > 0; n--) {
    if (dv.getUint32(at, true) !== 0x02014b50) throw new Error('the report zip is corrupt');
    const method = dv.getUint16(at + 10, true);
    const size = dv.getUint32(at + 20, true);
    const nameLen = dv.getUint16(at + 28, true);
    const local = dv.getUint32(at + 42, true);
    const name = names.decode(new Uint8Array(buf, at + 46, nameLen));
    at += 46 + nameLen + dv.getUint16(at + 30, true) + dv.getUint16(at + 32, true);
    const start = local + 30 + dv.getUint16(local + 26, true) + dv.getUint16(local + 28, true);
    const data = new Uint8Array(buf, start, size);
    if (name.endsWith('/')) continue;
    if (method === 0) files.set(name, data);
    else if (method === 8) {
      const out = new Blob([data]).stream().pipeThrough(new DecompressionStream('deflate-raw'));
      files.set(name, new Uint8Array(await new Response(out).arrayBuffer()));
    } else throw new Error(`zip entry ${name} uses compression method ${method}`);
  }
  return files;
}

// openReport shows the HTML report at path (?format=html is added), with
// downloads of its LCOV and zip.
export async function openReport(path, title) {
  const resp = await call('GET', `${path}${path.includes('?') ? '&' : '?'}format=html`, undefined, { raw: true });
  const files = await unzip(await resp.arrayBuffer());
  const text = (name) => new TextDecoder().decode(files.get(name));
  const frame = h('iframe', { class: 'report', sandbox: 'allow-same-origin', title: 'coverage report' });
  const where = h('span', { class: 'muted' });
  const show = (name) => {
    where.textContent = name;
    frame.srcdoc = text(name);
  };
  frame.addEventListener('load', () => {
    frame.contentDocument?.addEventListener('click', (e) => {
      const a = e.target.closest?.('a[href]');
      const href = a?.getAttribute('href');
      if (!href || href.startsWith('#')) return;
      e.preventDefault();
      const name = href.split('#')[0];
      if (files.has(name)) show(name);
    });
  });
  const dlg = h('dialog', { class: 'report-dialog', onclose: () => dlg.remove() },
    h('div', { class: 'dialog-bar' },
      h('strong', null, title), where, h('span', { class: 'spacer' }),
      button('Index', () => show('index.html'), 'small ghost'),
      button('LCOV', (b) => download(`${path}${path.includes('?') ? '&' : '?'}format=lcov`, 'coverage.info').catch((e) => toast(e.message, 'error')), 'small ghost'),
      button('Close', () => dlg.close(), 'small')),
    frame);
  document.body.append(dlg);
  show('index.html');
  dlg.showModal();
}
