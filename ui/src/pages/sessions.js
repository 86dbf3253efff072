import { post, del, p, boards } from '../api.js';
import { h, card, when, badge, action, button, field, toast, liveTable } from '../dom.js';
import { watch } from '../events.js';
import { programSelect } from './programs.js';

const sessionEvents = ['io.machineserver.session.', 'io.machineserver.snapshot.forked'];

// boardSelect lists the boards of every backend, grouped by architecture.
export async function boardSelect(attrs, value) {
  const sel = h('select', attrs);
  const list = await boards().catch((e) => { toast(e.message, 'error'); return []; });
  const byArch = new Map();
  for (const b of list) byArch.set(b.arch || 'other', [...(byArch.get(b.arch || 'other') || []), b]);
  for (const [arch, bs] of byArch) {
    sel.append(h('optgroup', { label: arch }, bs.map((b) => h('option', { value: b.name, title: b.description }, `${b.name} — ${b.description || b.cpu}`))));
  }
  sel.value = list.some((b) => b.name === value) ? value : list[0]?.name || '';
  return sel;
}

export function sessionsPage(root) {
  const rows = h('tbody');
  const total = h('span', { class: 'muted' });
  const name = h('input', { id: 'session-name', placeholder: 'my-session', required: true });
  const poweron = h('input', { id: 'session-poweron', type: 'checkbox', checked: true });
  const formBody = h('div', { class: 'row' }, field('Name', name));
  const submit = h('button', { type: 'submit', class: 'primary', id: 'session-create' }, 'Create session');
  const form = h('form', {
    onsubmit: (e) => {
      e.preventDefault();
      action(submit, async () => {
        const board = form.querySelector('#session-board').value;
        const program = form.querySelector('#session-program').value;
        let s = await post('/api/v1/sessions', { name: name.value.trim() || board, board_config: { board } });
        if (program) {
          s = await post(p`/api/v1/sessions/${s.id}/program`, { program_id: program });
          if (poweron.checked) s = await post(p`/api/v1/sessions/${s.id}/poweron`);
        }
        location.hash = `#/sessions/${s.id}`;
      });
    },
  }, formBody, h('div', { class: 'actions' }, h('label', { class: 'check' }, poweron, 'load the program and power on'), submit));
  Promise.all([boardSelect({ id: 'session-board' }, 'mps2-an385'), programSelect({ id: 'session-program' }, '— no program yet —')])
    .then(([b, pr]) => formBody.append(field('Board', b), field('Program', pr)));

  root.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Sessions'), total),
    card('New session', null, form),
    card(null, null, h('table', { id: 'sessions-table', class: 'list' },
      h('thead', null, h('tr', null, ['Name', 'State', 'Board', 'Program', 'Created', ''].map((c) => h('th', null, c)))),
      rows)));

  function row(s) {
    const tr = h('tr', { dataset: { id: s.id } },
      h('td', null, h('a', { href: `#/sessions/${s.id}` }, s.name), h('div', { class: 'muted small' }, h('code', null, s.id))),
      h('td', { class: 'state' }, badge(s.state), s.reason && h('div', { class: 'muted small reason', title: s.reason }, s.reason)),
      h('td', null, s.machine),
      h('td', null, s.program_id ? h('code', null, s.program_id) : h('span', { class: 'muted' }, 'none')),
      h('td', null, when(s.created_at)),
      h('td', { class: 'actions' },
        s.state === 'running'
          ? button('Power off', (b) => action(b, () => post(p`/api/v1/sessions/${s.id}/poweroff`).then(update)), 'small', { dataset: { action: 'poweroff' } })
          : s.program_id && button('Power on', (b) => action(b, () => post(p`/api/v1/sessions/${s.id}/poweron`).then(update)), 'small', { dataset: { action: 'poweron' } }),
        button('Delete', (b) => {
          if (!confirm(`Delete session ${s.name}? Its emulator stops and its console history goes.`)) return;
          action(b, async () => { await del(p`/api/v1/sessions/${s.id}`); remove(s.id); }, `Deleted ${s.name}`);
        }, 'small danger', { dataset: { action: 'delete' } })));
    return tr;
  }

  const { update, remove, load } = liveTable({
    rows, total, cols: 6, none: 'No sessions yet.', path: '/api/v1/sessions?page_size=100', key: 'sessions', row,
  });

  const unwatch = watch(sessionEvents, (ev) => {
    if (ev.type === 'io.machineserver.session.deleted.v1') remove(ev.subject || ev.data?.id);
    else if (ev.data?.id && ev.data.state) update(ev.data);
    else load();
  }, load);
  return { ready: load(), cleanup: unwatch };
}
