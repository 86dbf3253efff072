import { get, post, del, p } from '../api.js';
import { h, replace, card, bytes, when, hex, empty, toast, action, button, field } from '../dom.js';
import { watch } from '../events.js';

export function programsPage(root) {
  const rows = h('tbody');
  const total = h('span', { class: 'muted' });
  const name = h('input', { id: 'program-name', placeholder: 'the file name' });
  const format = h('select', { id: 'program-format' },
    h('option', { value: '' }, 'detect (ELF, HEX)'), h('option', { value: 'elf' }, 'ELF'),
    h('option', { value: 'hex' }, 'Intel HEX'), h('option', { value: 'bin' }, 'raw binary'));
  const loadAddr = h('input', { id: 'program-load-address', placeholder: 'board flash base', disabled: true });
  format.addEventListener('change', () => { loadAddr.disabled = format.value !== 'bin'; });
  const input = h('input', { id: 'program-file', type: 'file', multiple: true, accept: '.elf,.axf,.hex,.ihex,.bin,application/octet-stream' });
  const progress = h('div', { class: 'uploads' });

  async function upload(file) {
    const fd = new FormData();
    fd.append('file', file);
    fd.append('name', name.value.trim() || file.name.replace(/\.(elf|axf|hex|ihex|bin)$/i, ''));
    const fmt = format.value || (/\.bin$/i.test(file.name) ? 'bin' : '');
    if (fmt) fd.append('format', fmt);
    if (fmt === 'bin' && loadAddr.value.trim()) fd.append('load_address', loadAddr.value.trim());
    const line = h('div', { class: 'upload' }, `Uploading ${file.name} (${bytes(file.size)})…`);
    progress.append(line);
    try {
      const prog = await post('/api/v1/programs', fd);
      replace(line, `Stored ${file.name} as `, h('code', null, prog.id), ` (${prog.format}${prog.arch ? ', ' + prog.arch : ''}).`);
      line.classList.add('ok');
      load();
    } catch (e) {
      replace(line, `${file.name}: ${e.message}`);
      line.classList.add('error');
    }
    setTimeout(() => line.remove(), 10000);
  }

  const uploadAll = (files) => { for (const f of files) upload(f); };
  input.addEventListener('change', () => { uploadAll(input.files); input.value = ''; });
  const drop = h('div', {
    id: 'dropzone', class: 'dropzone', tabindex: 0,
    ondragover: (e) => { e.preventDefault(); drop.classList.add('over'); },
    ondragleave: () => drop.classList.remove('over'),
    ondrop: (e) => { e.preventDefault(); drop.classList.remove('over'); uploadAll(e.dataTransfer.files); },
    onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') input.click(); },
  },
  h('strong', null, 'Drop firmware here'),
  h('span', null, 'ELF, Intel HEX or raw binary — or ', h('label', { class: 'linkish' }, 'choose files', input)));

  root.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Programs'), total),
    card('Upload', null,
      drop,
      h('div', { class: 'row' }, field('Name', name), field('Format', format), field('Load address', loadAddr, 'raw binary only; decimal or 0x hex')),
      progress),
    card(null, null, h('table', { id: 'programs-table', class: 'list' },
      h('thead', null, h('tr', null, ['Name', 'Id', 'Format', 'Arch', 'Size', 'Entry', 'SHA-256', 'Uploaded', ''].map((c) => h('th', null, c)))),
      rows)));

  async function load() {
    try {
      const r = await get('/api/v1/programs?page_size=100');
      total.textContent = `${r.total} stored`;
      replace(rows, r.programs.length ? r.programs.map(row) : empty(9, 'No programs yet: drop a firmware image above.'));
    } catch (e) {
      replace(rows, empty(9, e.message));
    }
  }

  function row(pr) {
    return h('tr', { dataset: { id: pr.id } },
      h('td', null, pr.name, pr.state === 'rejected' && h('span', { class: 'badge state-error', title: pr.reason }, 'rejected')),
      h('td', null, h('code', null, pr.id)),
      h('td', null, pr.format),
      h('td', null, pr.arch || ''),
      h('td', { class: 'num' }, bytes(pr.size)),
      h('td', null, h('code', null, hex(pr.entry))),
      h('td', null, h('code', { title: pr.sha256 }, (pr.sha256 || '').slice(0, 12))),
      h('td', null, when(pr.created_at)),
      h('td', { class: 'actions' }, button('Delete', (b) => {
        if (!confirm(`Delete program ${pr.name} (${pr.id})?`)) return;
        action(b, async () => { await del(p`/api/v1/programs/${pr.id}`); load(); }, `Deleted ${pr.name}`);
      }, 'small danger', { dataset: { action: 'delete' } })));
  }

  const unwatch = watch(['io.machineserver.program.'], () => load(), load);
  return { ready: load(), cleanup: unwatch };
}

// programOptions is a <select> of the stored programs.
export async function programSelect(attrs, none) {
  const sel = h('select', attrs, none && h('option', { value: '' }, none));
  try {
    const r = await get('/api/v1/programs?page_size=100');
    for (const pr of r.programs.filter((x) => x.state !== 'rejected')) {
      sel.append(h('option', { value: pr.id }, `${pr.name} (${pr.id.slice(0, 8)}${pr.arch ? ', ' + pr.arch : ''})`));
    }
  } catch (e) {
    toast(e.message, 'error');
  }
  return sel;
}
