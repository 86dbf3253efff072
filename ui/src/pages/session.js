import { get, post, del, p, board as boardOf, APIError } from '../api.js';
import { h, replace, card, bytes, when, badge, empty, action, button, copyable, toast } from '../dom.js';
import { watch } from '../events.js';
import { ConsoleView } from '../terminal.js';
import { openReport } from '../report.js';
import { programSelect } from './programs.js';

// sessionPage is one session: power, program, a live two-way console on
// any of the board's UARTs, snapshots, coverage and the debugger snippet.
export function sessionPage(root, id) {
  let s = null;
  let board = null;
  const sp = (tail = '') => p`/api/v1/sessions/${id}` + tail;

  const title = h('h1', null, '…');
  const state = h('span', { id: 'session-state' });
  const meta = h('div', { class: 'meta' });
  const alerts = h('div');
  const head = h('div', { class: 'page-head' }, h('a', { class: 'back', href: '#/sessions' }, '← Sessions'), title, state);

  // Power and program.
  const btn = {
    on: button('Power on', (b) => act(b, 'poweron'), 'primary', { id: 'power-on' }),
    halted: button('Power on halted', (b) => act(b, 'poweron?halted=true'), '', { id: 'power-on-halted', title: 'the CPU waits at the reset vector for a debugger' }),
    off: button('Power off', (b) => act(b, 'poweroff'), '', { id: 'power-off' }),
    reset: button('Reset', (b) => act(b, 'reset'), '', { id: 'reset' }),
    del: button('Delete session', (b) => {
      if (!confirm(`Delete session ${s?.name || id}? Its emulator stops and its console history goes.`)) return;
      action(b, async () => { await del(sp()); location.hash = '#/sessions'; }, 'Session deleted');
    }, 'danger', { id: 'session-delete' }),
  };
  const loadBtn = button('Load', (b) => {
    const prog = root.querySelector('#load-program').value;
    if (prog) action(b, async () => show(await post(sp('/program'), { program_id: prog })), 'Program loaded');
  }, '', { id: 'load-program-button' });
  const loadRow = h('div', { class: 'inline' }, h('span', { class: 'muted' }, 'Program'));
  programSelect({ id: 'load-program' }).then((sel) => {
    if (s?.program_id) sel.value = s.program_id;
    loadRow.append(sel, loadBtn);
  });

  // action() enables its button again when done; the power buttons follow
  // the state, so show() decides once more after it.
  const act = (b, op) => action(b, async () => show(await post(sp(`/${op}`)))).finally(() => { if (s) show(s); });

  // Console.
  const termEl = h('div', { id: 'terminal', class: 'terminal' });
  const conStatus = h('span', { id: 'console-status', class: 'muted' });
  const port = h('select', { id: 'console-port', title: 'UART' });
  const view = new ConsoleView(termEl, {
    onStatus: (st, detail) => {
      conStatus.dataset.status = st;
      conStatus.textContent = st === 'notice' ? detail : detail ? `${st}: ${detail}` : st;
    },
  });
  port.addEventListener('change', () => view.connect(id, port.value));

  // Snapshots.
  const snapRows = h('tbody');
  const snapName = h('input', { id: 'snapshot-name', placeholder: 'name', value: '' });
  const snapTake = button('Take snapshot', (b) => action(b, async () => {
    const snap = await post(sp('/snapshots'), { name: snapName.value.trim() || `snapshot-${new Date().toISOString().slice(11, 19)}` });
    snapName.value = '';
    loadSnapshots();
    return snap;
  }, 'Snapshot taken'), 'primary', { id: 'snapshot-take' });
  const snapNote = h('p', { class: 'muted small' });

  // Coverage.
  const covState = h('p', { id: 'coverage-state', class: 'muted' });
  const covTotals = h('div', { id: 'coverage-totals' });
  let reportID = '';
  const covBtn = {
    start: button('Start', (b) => action(b, async () => show(await post(sp('/coverage/start')))), '', { id: 'coverage-start' }),
    stop: button('Stop and store', (b) => action(b, async () => {
      const r = await post(sp('/coverage/stop'));
      reportID = r.id;
      totals(r);
      show(await get(sp()));
    }), '', { id: 'coverage-stop' }),
    open: button('Open report', (b) => action(b, () => (reportID && !s?.coverage
      ? openReport(p`/api/v1/coverage/reports/${reportID}`, `Coverage report ${reportID}`)
      : openReport(sp('/coverage'), `Coverage of ${s?.name || id} so far`))), '', { id: 'coverage-open' }),
  };

  // Debugger.
  const gdbBody = h('div', { id: 'gdb' }, h('p', { class: 'muted' }, 'Loading…'));

  root.append(head, meta, alerts,
    card(null, { class: 'card toolbar' },
      h('div', { class: 'inline' }, btn.on, btn.halted, btn.off, btn.reset),
      loadRow,
      h('span', { class: 'spacer' }), btn.del),
    h('div', { class: 'grid' },
      card(null, { class: 'card console' },
        h('div', { class: 'card-head' }, h('h2', null, 'Console'), port, conStatus, h('span', { class: 'spacer' }),
          button('Clear', () => { view.clear(); view.focus(); }, 'small ghost', { id: 'console-clear' })),
        h('div', { class: 'terminal-frame' }, termEl)),
      h('div', { class: 'side' },
        card('Snapshots', { id: 'snapshots' },
          h('div', { class: 'inline' }, snapName, snapTake), snapNote,
          h('table', { id: 'snapshots-table', class: 'list compact' },
            h('thead', null, h('tr', null, ['Name', 'Taken', 'Size', ''].map((c) => h('th', null, c)))), snapRows)),
        card('Coverage', { id: 'coverage' }, covState, h('div', { class: 'inline' }, covBtn.start, covBtn.stop, covBtn.open), covTotals),
        card('Debugger', { id: 'debugger' }, gdbBody))));

  function show(next) {
    s = next;
    title.textContent = s.name;
    replace(state, badge(s.state));
    replace(meta,
      h('span', null, h('code', null, s.id)), h('span', null, 'board ', h('strong', null, s.machine)), h('span', null, s.backend),
      h('span', null, 'program ', s.program_id ? h('code', null, s.program_id) : 'none'),
      s.started_at && h('span', null, 'started ', when(s.started_at)),
      s.system_id && h('span', { id: 'session-system' }, 'node of system ', h('a', { href: `#/systems/${s.system_id}` }, h('code', null, s.system_id))),
      s.snapshot_id && h('span', null, 'from snapshot ', h('code', null, s.snapshot_id)),
      s.replay_of && h('span', { id: 'session-replay-of' }, 'replays recording ', h('code', null, s.replay_of)),
      s.record && h('span', null, 'records every power on'),
      s.runner_id && h('span', { class: 'muted' }, 'runner ', s.runner_id));
    replace(alerts,
      s.reason && h('div', { class: `alert ${s.state === 'error' ? 'error' : ''}` }, s.reason),
      s.warnings?.length && h('div', { class: 'alert warn' }, h('strong', null, 'Warnings: '), s.warnings.join('; ')),
      s.emulator_log?.length && h('details', { class: 'alert' }, h('summary', null, 'Emulator log'), h('pre', null, s.emulator_log.join('\n'))));
    const running = s.state === 'running';
    btn.on.disabled = running || !s.program_id;
    btn.halted.disabled = running || !s.program_id;
    btn.halted.hidden = !!board && !board.features?.includes('halted-poweron');
    btn.off.disabled = !running;
    btn.reset.disabled = !running;
    covBtn.start.disabled = !!s.coverage || !s.program_id;
    covBtn.stop.disabled = !s.coverage;
    covState.textContent = s.coverage ? 'A coverage window is open: counts are gathered while the firmware runs.' : reportID ? `Stored report ${reportID}.` : 'No coverage window is open.';
    snapTake.disabled = !running || board?.snapshots === false;
    return s;
  }

  function totals(r) {
    const t = r.totals || {};
    const pct = (hit, found) => (found ? `${((100 * hit) / found).toFixed(1)}%` : '—');
    replace(covTotals, h('table', { class: 'list compact' },
      h('thead', null, h('tr', null, h('th'), h('th', null, 'hit'), h('th', null, 'found'), h('th'))),
      h('tbody', null, ['lines', 'functions', 'branches'].map((k) => h('tr', null, h('td', null, k),
        h('td', { class: 'num' }, t[`${k}_hit`] ?? 0), h('td', { class: 'num' }, t[`${k}_found`] ?? 0), h('td', { class: 'num' }, pct(t[`${k}_hit`], t[`${k}_found`])))))));
  }

  async function loadSnapshots() {
    try {
      const r = await get(sp('/snapshots?page_size=100'));
      replace(snapRows, r.snapshots.length ? r.snapshots.map((sn) => h('tr', { dataset: { id: sn.id } },
        h('td', null, sn.name, sn.description && h('div', { class: 'muted small' }, sn.description)),
        h('td', null, when(sn.created_at)),
        h('td', { class: 'num' }, bytes(sn.size)),
        h('td', { class: 'actions' },
          button('Restore', (b) => action(b, async () => show(await post(sp('/restore'), { snapshot_id: sn.id })), `Restored ${sn.name}`), 'small', { dataset: { action: 'restore' } }),
          button('Fork', (b) => action(b, async () => {
            const f = await post(p`/api/v1/snapshots/${sn.id}/sessions`, { count: 1, name_prefix: `${s?.name || 'fork'}-fork` });
            const n = f.sessions[0];
            toast(h('span', null, 'Forked into ', h('a', { href: `#/sessions/${n.id}` }, n.name)), 'ok');
          }), 'small', { dataset: { action: 'fork' } })))) : empty(4, 'None yet.'));
    } catch (e) {
      replace(snapRows, empty(4, e.message));
    }
  }

  async function loadGDB() {
    try {
      const g = await get(sp('/gdb'));
      const sn = g.snippets || {};
      replace(gdbBody,
        h('p', { class: 'muted small' }, 'One debugger at a time. Through the WebSocket tunnel with msctl (no open port needed):'),
        sn.msctl && copyable(sn.msctl, { id: 'gdb-msctl' }),
        h('p', { class: 'muted small' }, `Or ${board?.debugger || 'gdb'} straight to the runner's port ${g.tcp}:`),
        sn.gdb && copyable(sn.gdb, { id: 'gdb-command' }),
        sn.halted_poweron && h('details', null, h('summary', null, 'Start halted at the reset vector'), copyable(sn.halted_poweron)),
        sn.vscode_launch && h('details', null, h('summary', null, 'VS Code launch.json (cortex-debug)'), copyable(JSON.stringify(sn.vscode_launch, null, 2))));
    } catch (e) {
      replace(gdbBody, h('p', { class: 'muted' }, e.message));
    }
  }

  async function load() {
    try {
      show(await get(sp()));
    } catch (e) {
      replace(alerts, h('div', { class: 'alert error' }, e instanceof APIError && e.status === 404 ? `Session ${id} does not exist (any more).` : e.message));
      return;
    }
    await Promise.all([loadSnapshots(), loadGDB()]);
  }

  const ready = (async () => {
    try {
      board = await boardOf((await get(sp())).machine);
    } catch { /* load() reports it */ }
    if (board) {
      replace(port, (board.uarts || []).map((u) => h('option', { value: u.port }, u.name === u.port ? u.port : `${u.port} · ${u.name}`)));
      if (!board.snapshots) snapNote.textContent = `${board.name} cannot be snapshotted by this QEMU${board.snapshot_unsaved ? ` (it does not save ${board.snapshot_unsaved.join(', ')})` : ''}.`;
      view.connect(id, port.value || 'uart0');
    }
    await load();
  })();

  const unwatch = [
    watch(['io.machineserver.session.'], (ev) => {
      if ((ev.subject || ev.data?.id) !== id) return;
      if (ev.type === 'io.machineserver.session.deleted.v1') {
        replace(state, badge('deleted'));
        replace(alerts, h('div', { class: 'alert error' }, 'This session was deleted.'));
        view.close();
        return;
      }
      if (ev.data?.state) show(ev.data);
      if (ev.type === 'io.machineserver.session.started.v1') loadGDB();
    }, load),
    watch(['io.machineserver.snapshot.'], (ev) => {
      // restored carries {session, snapshot}; the others the snapshot.
      if (ev.data?.session?.id === id) show(ev.data.session);
      if (ev.data?.session_id === id || ev.subject === id) loadSnapshots();
    }),
    watch(['io.machineserver.coverage.ready'], (ev) => {
      if (ev.data?.sessions?.includes(id) && ev.data.id) {
        reportID = ev.data.id;
        totals(ev.data);
        if (s) show(s);
      }
    }),
  ];
  return {
    ready,
    cleanup: () => {
      unwatch.forEach((u) => u());
      view.dispose();
    },
  };
}
