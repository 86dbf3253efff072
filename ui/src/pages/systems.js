import { get, post, del, p, download, APIError } from '../api.js';
import { h, replace, card, bytes, when, badge, empty, action, button, field, toast, liveTable } from '../dom.js';
import { watch } from '../events.js';

// Systems: boards linked into one thing. Each node is an ordinary session,
// so its console, debugger and coverage are the session page's; here are
// the system's own controls, its links (counters, faults, what crosses
// them), its snapshots and, on virtual time, its clock barrier.

const systemEvents = ['io.machineserver.system.', 'io.machineserver.systemsnapshot.forked'];

// How many of a link's newest records the live view keeps on screen.
const KEEP = 60;

// The link stream (WS .../links/{link}/stream) takes only an API key or
// a JWT in Authorization, which a browser cannot put on a WebSocket; the
// live view polls the capture instead, with ?after= so nothing is missed
// (UART), or the whole bounded pcap (Ethernet, which has no ?after=).
const POLL_UART_MS = 1000;
const POLL_ETHERNET_MS = 3000;
const POLL_COUNTERS_MS = 2000;

export function systemsPage(root) {
  const rows = h('tbody');
  const total = h('span', { class: 'muted' });
  const spec = h('textarea', { id: 'system-spec', rows: 16, spellcheck: 'false' });
  const submit = h('button', { type: 'submit', class: 'primary', id: 'system-create' }, 'Create system');
  const form = h('form', {
    onsubmit: (e) => {
      e.preventDefault();
      action(submit, async () => {
        let body;
        try {
          body = JSON.parse(spec.value);
        } catch (err) {
          throw new Error(`The spec is not JSON: ${err.message}`);
        }
        const s = await post('/api/v1/systems', body);
        location.hash = `#/systems/${s.id}`;
      });
    },
  }, field('Spec', spec, 'the body of POST /api/v1/systems: nodes (each a session: board and program) and the links joining them; time "virtual" runs every node on the instruction counter'),
  h('div', { class: 'actions' }, submit));
  example().then((text) => { if (!spec.value) spec.value = text; });

  root.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Systems'), total),
    card('New system', null, form),
    card(null, null, h('table', { id: 'systems-table', class: 'list' },
      h('thead', null, h('tr', null, ['Name', 'State', 'Time', 'Nodes', 'Links', 'Created', ''].map((c) => h('th', null, c)))),
      rows)));

  function row(s) {
    return h('tr', { dataset: { id: s.id } },
      h('td', null, h('a', { href: `#/systems/${s.id}` }, s.name), h('div', { class: 'muted small' }, h('code', null, s.id))),
      h('td', { class: 'state' }, badge(s.state), s.reason && h('div', { class: 'muted small reason', title: s.reason }, s.reason)),
      h('td', { class: 'time' }, s.time || 'realtime'),
      h('td', { class: 'num nodes' }, (s.nodes || []).length),
      h('td', { class: 'links' }, (s.links || []).length
        ? (s.links || []).map((l) => h('div', null, h('strong', null, l.name), ` ${l.type} `, h('span', { class: 'muted small' }, linkEnds(l))))
        : h('span', { class: 'muted' }, 'none')),
      h('td', null, when(s.created_at)),
      h('td', { class: 'actions' },
        button('Delete', (b) => {
          if (!confirm(`Delete system ${s.name}? Its links and every node session go.`)) return;
          action(b, async () => { await del(p`/api/v1/systems/${s.id}`); remove(s.id); }, `Deleted ${s.name}`);
        }, 'small danger', { dataset: { action: 'delete' } })));
  }

  const { update, remove, load } = liveTable({
    rows, total, cols: 7, none: 'No systems yet.', path: '/api/v1/systems?page_size=100', key: 'systems', row,
  });
  const unwatch = watch(systemEvents, (ev) => {
    if (ev.type === 'io.machineserver.system.deleted.v1') remove(ev.subject || ev.data?.id);
    else if (ev.data?.system?.id) update(ev.data.system);
    else if (ev.data?.id && ev.data.state) update(ev.data);
    else load();
  }, load);
  return { ready: load(), cleanup: unwatch };
}

// example is a two-node spec to start from, with stored programs' ids.
async function example() {
  let progs = [];
  try {
    progs = (await get('/api/v1/programs?page_size=100')).programs.filter((x) => x.state !== 'rejected');
  } catch { /* the placeholders say what goes there */ }
  const pick = (re, i) => (progs.find((x) => re.test(x.name)) || progs[i] || progs[0])?.id || 'PROGRAM_ID';
  return JSON.stringify({
    name: 'pair',
    nodes: [
      { name: 'gw', board_config: { board: 'mps2-an385' }, program_id: pick(/ping/, 0) },
      { name: 'sensor', board_config: { board: 'mps2-an385' }, program_id: pick(/pong/, 1) },
    ],
    links: [{ type: 'uart', ends: ['gw:uart1', 'sensor:uart1'], faults: {} }],
    time: 'realtime',
  }, null, 2);
}

const linkEnds = (l) => (l.type === 'uart' ? (l.ends || []).join(' ⇄ ') : (l.nodes || []).join(', '));

// systemPage is one system: power for all its nodes at once, the nodes
// (each linked to its session page), the links with their counters, faults
// and traffic, snapshots, and the clock barrier of a virtual-time system.
export function systemPage(root, id) {
  let sys = null;
  let gone = false;
  const sp = (tail = '') => p`/api/v1/systems/${id}` + tail;
  const timers = new Set();

  const title = h('h1', null, '…');
  const state = h('span', { id: 'system-state' });
  const meta = h('div', { class: 'meta' });
  const alerts = h('div', { id: 'system-alerts' });
  const head = h('div', { class: 'page-head' }, h('a', { class: 'back', href: '#/systems' }, '← Systems'), title, state);

  // run is action() for the toolbar's buttons, whose enabling follows the
  // state: action() enables its button again when done, so show() decides
  // once more after it.
  const run = (b, fn, ok) => action(b, fn, ok).finally(() => { if (sys && !gone) show(sys); });
  const act = (b, op, ok) => run(b, async () => show(await post(sp(`/${op}`))), ok);
  const snapName = h('input', { id: 'system-snapshot-name', placeholder: 'snapshot name' });
  const btn = {
    on: button('Power on', (b) => act(b, 'poweron'), 'primary', { id: 'system-poweron', title: 'every node starts paused, the links go on, then all resume at once' }),
    off: button('Power off', (b) => act(b, 'poweroff'), '', { id: 'system-poweroff' }),
    reset: button('Reset', (b) => act(b, 'reset', 'Reset'), '', { id: 'system-reset' }),
    snap: button('Take snapshot', (b) => run(b, async () => {
      const v = await post(sp('/snapshots'), { name: snapName.value.trim() || `snapshot-${new Date().toISOString().slice(11, 19).replace(/:/g, '')}` });
      snapName.value = '';
      loadSnapshots();
      return v;
    }, 'System snapshot taken'), '', { id: 'system-snapshot-take' }),
    del: button('Delete system', (b) => {
      if (!confirm(`Delete system ${sys?.name || id}? Its links and every node session go.`)) return;
      action(b, async () => { await del(sp()); location.hash = '#/systems'; }, 'System deleted');
    }, 'danger', { id: 'system-delete' }),
  };

  const nodeRows = h('tbody');
  const linksBox = h('div', { id: 'system-links' });
  const snapRows = h('tbody');
  const clockBody = h('div', { id: 'system-clock' });
  const clockCard = card('Virtual time', { id: 'system-clock-card', hidden: true },
    h('p', { class: 'muted small' }, 'The runner holds a node more than a quantum ahead of the slowest one, so the system advances at its slowest node\'s pace.'),
    clockBody);

  root.append(head, meta, alerts,
    card(null, { class: 'card toolbar' },
      h('div', { class: 'inline' }, btn.on, btn.off, btn.reset),
      h('div', { class: 'inline' }, snapName, btn.snap),
      h('span', { class: 'spacer' }), btn.del),
    card('Nodes', { id: 'system-nodes-card' },
      h('p', { class: 'muted small' }, 'Each node is a session: open it for its console, debugger and coverage.'),
      h('table', { id: 'system-nodes', class: 'list compact' },
        h('thead', null, h('tr', null, ['Node', 'Board', 'State', 'Program', 'MAC', 'Session'].map((c) => h('th', null, c)))), nodeRows)),
    linksBox,
    clockCard,
    card('Snapshots', { id: 'system-snapshots' },
      h('table', { id: 'system-snapshots-table', class: 'list compact' },
        h('thead', null, h('tr', null, ['Name', 'Nodes', 'Size', 'Paused', 'Taken', ''].map((c) => h('th', null, c)))), snapRows)));

  // Node names by session id, and session ids by node name.
  const nodeOf = (session) => sys?.nodes?.find((n) => n.session_id === session)?.name;
  // end names a link end ("<session>:uart1") by its node ("gw:uart1").
  const end = (s) => {
    if (!s) return '';
    const [session, port] = s.split(':');
    const n = nodeOf(session);
    return n ? (port ? `${n}:${port}` : n) : s;
  };

  function show(next) {
    if (!next?.id) return sys;
    sys = next;
    title.textContent = sys.name;
    replace(state, badge(sys.state));
    replace(meta,
      h('span', null, h('code', null, sys.id)),
      h('span', { id: 'system-time' }, 'time ', h('strong', null, sys.time || 'realtime')),
      sys.runner_id && h('span', { class: 'muted' }, 'runner ', sys.runner_id),
      h('span', null, 'seed ', h('code', null, String(sys.seed))),
      h('span', null, 'created ', when(sys.created_at)));
    replace(alerts, sys.reason && h('div', { class: `alert ${sys.state === 'error' ? 'error' : ''}` }, sys.reason));
    const running = sys.state === 'running';
    btn.on.disabled = running;
    btn.off.disabled = !running;
    btn.reset.disabled = !running;
    btn.snap.disabled = !running;
    renderNodes();
    for (const l of sys.links || []) linkView(l).faults(l.faults);
    clockCard.hidden = sys.time !== 'virtual';
    return sys;
  }

  function renderNodes() {
    replace(nodeRows, (sys.nodes || []).map((n) => h('tr', { dataset: { node: n.name, session: n.session_id } },
      h('td', null, h('a', { href: `#/sessions/${n.session_id}`, class: 'node-link' }, h('strong', null, n.name))),
      h('td', null, n.machine),
      h('td', { class: 'state' }, n.state ? badge(n.state) : h('span', { class: 'muted' }, '—')),
      h('td', null, h('code', null, n.program_id || '')),
      h('td', null, n.mac ? h('code', null, n.mac) : ''),
      h('td', null, h('a', { href: `#/sessions/${n.session_id}` }, h('code', null, n.session_id))))));
  }

  // Links: one card each, made on first sight and kept (its live view
  // holds the records seen so far).
  const links = new Map();
  function linkView(l) {
    let v = links.get(l.name);
    if (!v) {
      v = makeLink(l);
      links.set(l.name, v);
      linksBox.append(v.el);
    }
    return v;
  }

  function makeLink(l) {
    const lp = (tail = '') => sp(p`/links/${l.name}` + tail);
    const counters = h('div', { class: 'link-counters' }, h('p', { class: 'muted small' }, 'Counters come once the system was powered on.'));
    const down = h('input', { type: 'checkbox', name: 'down' });
    const loss = h('input', { name: 'loss', type: 'number', min: 0, max: 1, step: 'any', placeholder: '0' });
    const corrupt = h('input', { name: 'corrupt', type: 'number', min: 0, max: 1, step: 'any', placeholder: '0' });
    const delay = h('input', { name: 'delay', placeholder: 'e.g. 5ms' });
    const apply = h('button', { type: 'submit', class: 'primary small', dataset: { action: 'faults' } }, 'Apply faults');
    const faultsForm = h('form', {
      class: 'faults',
      onsubmit: (e) => {
        e.preventDefault();
        action(apply, async () => {
          const f = { down: down.checked };
          for (const [k, inp] of [['loss', loss], ['corrupt', corrupt]]) {
            if (inp.value.trim() !== '') f[k] = Number(inp.value);
          }
          if (delay.value.trim()) f.delay = delay.value.trim();
          const r = await post(lp(), f);
          shown = '';
          setFaults(r.link.faults);
          setCounters(r);
        }, 'Faults applied');
      },
    },
    h('label', { class: 'check' }, down, 'down'),
    field('Loss', loss, 'probability 0 to 1'),
    field('Corrupt', corrupt, 'probability 0 to 1'),
    field('Delay', delay, 'Go duration, at most 10s'),
    apply);
    const recs = h('div', { class: 'link-records', role: 'log' });
    const streamNote = h('span', { class: 'muted small link-stream-status' });
    const el = card(null, { class: 'card link', dataset: { link: l.name, type: l.type } },
      h('div', { class: 'card-head' }, h('h2', null, `Link ${l.name}`), h('span', { class: 'badge' }, l.type), h('span', { class: 'muted' }, linkEnds(l)),
        h('span', { class: 'spacer' }),
        button(l.type === 'ethernet' ? 'Download pcap' : 'Download capture', (b) => action(b, () =>
          download(lp('/capture'), `${sys?.name || id}-${l.name}.${l.type === 'ethernet' ? 'pcap' : 'json'}`)), 'small', { dataset: { action: 'capture' } })),
      h('div', { class: 'link-grid' },
        h('div', null, h('h3', null, 'Counters'), counters, h('h3', null, 'Faults'), faultsForm),
        h('div', null, h('div', { class: 'card-head' }, h('h3', null, 'Traffic'), streamNote), recs)));

    // The form shows the stored faults, but is not overwritten while they
    // are what it last showed (the user may be typing).
    let shown = '';
    function setFaults(f = {}) {
      const key = JSON.stringify(f);
      if (key === shown) return;
      shown = key;
      down.checked = !!f.down;
      loss.value = f.loss ?? '';
      corrupt.value = f.corrupt ?? '';
      delay.value = f.delay ?? '';
      el.dataset.down = f.down ? 'true' : 'false';
    }

    function setCounters(r) {
      if (r?.link?.faults) setFaults(r.link.faults);
      const cell = (n) => h('td', { class: 'num' }, n ?? 0);
      if (r?.uart) {
        const u = r.uart;
        replace(counters,
          h('p', { class: 'muted small' }, u.attached ? 'attached: both machines run and the link carries their bytes' : 'not attached: a machine is not running', ` · attached ${u.attachments} times`),
          h('table', { class: 'list compact' },
            h('thead', null, h('tr', null, ['Bytes from', 'to', 'sent', 'delivered', 'dropped', 'lost', 'corrupted'].map((c) => h('th', null, c)))),
            h('tbody', null, (u.directions || []).map((d) => h('tr', { dataset: { from: end(d.from) } },
              h('td', null, end(d.from)), h('td', null, end(d.to)),
              cell(d.bytes), h('td', { class: 'num', dataset: { k: 'delivered' } }, d.delivered ?? 0),
              h('td', { class: 'num', dataset: { k: 'dropped' } }, d.dropped ?? 0), cell(d.lost), cell(d.corrupted))))));
      } else if (r?.ethernet) {
        replace(counters,
          h('table', { class: 'list compact' },
            h('thead', null, h('tr', null, ['Frames of', 'sent', 'received', 'dropped', 'lost', 'corrupted', 'overflow'].map((c) => h('th', null, c)))),
            h('tbody', null, (r.ethernet.ports || []).map((pt) => h('tr', { dataset: { from: nodeOf(pt.session) || pt.session } },
              h('td', null, nodeOf(pt.session) || pt.session, !pt.attached && h('span', { class: 'muted small' }, ' (not attached)')),
              h('td', { class: 'num', dataset: { k: 'in' } }, pt.in ?? 0), cell(pt.out),
              h('td', { class: 'num', dataset: { k: 'dropped' } }, pt.dropped ?? 0), cell(pt.lost), cell(pt.corrupted), cell(pt.overflow))))));
      }
    }

    async function pollCounters() {
      try {
        setCounters(await get(lp()));
      } catch (e) {
        replace(counters, h('p', { class: 'muted small' }, e.message));
      }
    }

    // Traffic: the newest records, each line saying which way it went.
    let next = 0;
    const sides = (l.ends || []).map((x) => x.split(':')[0]);
    function addRecord(r) {
      const from = end(r.from);
      const toName = Array.isArray(r.to) ? r.to.map(end).join(', ') : end(r.to);
      const side = l.type === 'uart' ? (sides.indexOf(from.split(':')[0]) === 1 ? 'b' : 'a') : '';
      const flags = [r.down && 'down', r.dropped && `dropped ${r.dropped}`, r.lost && `lost ${r.lost}`, r.corrupted && `corrupted ${r.corrupted}`, r.runt && 'runt'].filter(Boolean);
      recs.append(h('div', { class: `rec ${side && 'dir-' + side}`, dataset: { seq: r.seq ?? '', from: from.split(':')[0] } },
        h('span', { class: 'rec-time' }, clock(r.time)),
        h('span', { class: 'rec-dir' }, `${from} → ${toName}`),
        h('span', { class: 'rec-data' }, r.text),
        flags.map((f) => h('span', { class: 'rec-flag' }, f))));
      while (recs.childElementCount > KEEP) recs.firstElementChild.remove();
    }
    function addGap(text) {
      recs.append(h('div', { class: 'rec gap' }, text));
    }

    // gen counts restarts: a poll that began before one is not used.
    let gen = 0;
    async function pollUART() {
      const g = gen;
      let c;
      try {
        c = await get(lp(`/capture?after=${next}`));
        if (g !== gen) return;
      } catch (e) {
        streamNote.textContent = e.message;
        return;
      }
      const list = c.records || [];
      const stick = recs.scrollTop + recs.clientHeight >= recs.scrollHeight - 4;
      if (next && list.length && list[0].seq > next + 1) addGap(`${list[0].seq - next - 1} records not kept`);
      else if (!next && list.length > KEEP) addGap(`${list.length - KEEP} older records in the capture`);
      for (const r of list.slice(-KEEP)) addRecord({ ...r, text: printable(b64(r.data)) });
      if (c.next) next = c.next;
      streamNote.textContent = `live · ${next} records so far`;
      if (stick) recs.scrollTop = recs.scrollHeight;
    }

    let frames = 0;
    async function pollEthernet() {
      const g = gen;
      let buf;
      try {
        buf = await (await get(lp('/capture'), { raw: true })).arrayBuffer();
        if (g !== gen) return;
      } catch (e) {
        streamNote.textContent = e.message;
        return;
      }
      const all = pcapFrames(buf);
      // The capture is bounded: when it let frames go, show it afresh.
      if (all.length < frames) { recs.replaceChildren(); frames = 0; }
      const fresh = all.slice(Math.max(frames, all.length - KEEP));
      frames = all.length;
      const byMAC = new Map((sys?.nodes || []).filter((n) => n.mac).map((n) => [n.mac.toLowerCase(), n.name]));
      for (const f of fresh) {
        const dst = f.dst === 'ff:ff:ff:ff:ff:ff' ? 'broadcast' : byMAC.get(f.dst) || f.dst;
        addRecord({ time: f.time, from: byMAC.get(f.src) || f.src, to: dst, text: `type 0x${f.type.toString(16).padStart(4, '0')} · ${f.length} bytes` });
      }
      streamNote.textContent = `live · ${frames} frames in the capture`;
      recs.scrollTop = recs.scrollHeight;
    }

    loop(pollCounters, POLL_COUNTERS_MS);
    loop(l.type === 'ethernet' ? pollEthernet : pollUART, l.type === 'ethernet' ? POLL_ETHERNET_MS : POLL_UART_MS);
    setFaults(l.faults);
    // A restore puts the link on the runner anew: its records are
    // numbered from 1 again.
    function restart() {
      gen++;
      if (!next && !frames) return;
      next = 0;
      frames = 0;
      addGap('the link was put on anew (restore): its capture starts again');
    }
    return { el, faults: setFaults, counters: pollCounters, restart };
  }

  // loop runs fn now and again every ms after it finished, while the page
  // is open and the system exists.
  function loop(fn, ms) {
    const tick = async () => {
      if (gone) return;
      try { await fn(); } catch (e) { console.error(e); }
      if (!gone && timers.has(tick)) tick.timer = setTimeout(tick, ms);
    };
    timers.add(tick);
    tick();
  }

  async function pollClock() {
    if (sys?.time !== 'virtual') return;
    try {
      const c = await get(sp('/clock'));
      const row = (k, label, v) => [h('dt', null, label), h('dd', { dataset: { k } }, v)];
      replace(clockBody, h('dl', { class: 'details' },
        row('running', 'Barrier', c.running ? 'running' : `stopped${c.reason ? ': ' + c.reason : ''}`),
        row('quantum', 'Quantum', c.quantum),
        row('polls', 'Clock readings', c.polls),
        row('max_spread_ms', 'Largest spread', `${Number(c.max_spread_ms).toFixed(1)} ms`),
        row('holds', 'Holds', c.holds),
        row('held_ms', 'Held', `${Number(c.held_ms).toFixed(1)} ms`)));
    } catch (e) {
      replace(clockBody, h('p', { class: 'muted' }, e.message));
    }
  }

  async function loadSnapshots() {
    try {
      const r = await get(sp('/snapshots?page_size=100'));
      const list = r.system_snapshots || [];
      replace(snapRows, list.length ? list.map((v) => h('tr', { dataset: { id: v.id } },
        h('td', null, v.name, v.description && h('div', { class: 'muted small' }, v.description)),
        h('td', null, (v.nodes || []).map((n) => n.name).join(', ')),
        h('td', { class: 'num' }, bytes(v.size)),
        h('td', { class: 'num' }, `${Number(v.paused_ms || 0).toFixed(1)} ms`),
        h('td', null, when(v.created_at)),
        h('td', { class: 'actions' },
          button('Restore', (b) => action(b, async () => show(await post(sp('/restore'), { snapshot_id: v.id })), `Restored ${v.name}`), 'small', { dataset: { action: 'restore' } }),
          button('Fork', (b) => action(b, async () => {
            const f = await post(p`/api/v1/system-snapshots/${v.id}/systems`, { name: `${sys?.name || 'system'}-fork`.slice(0, 64) });
            toast(h('span', null, 'Forked into ', h('a', { href: `#/systems/${f.id}` }, f.name)), 'ok');
          }), 'small', { dataset: { action: 'fork' } }),
          button('Delete', (b) => {
            if (!confirm(`Delete system snapshot ${v.name} and its nodes' states?`)) return;
            action(b, async () => { await del(p`/api/v1/system-snapshots/${v.id}`); loadSnapshots(); }, `Deleted ${v.name}`);
          }, 'small danger', { dataset: { action: 'delete' } })))) : empty(6, 'None yet.'));
    } catch (e) {
      replace(snapRows, empty(6, e.message));
    }
  }

  function deleted() {
    gone = true;
    replace(state, badge('deleted'));
    replace(alerts, h('div', { class: 'alert error' }, 'This system was deleted.'));
    for (const b of Object.values(btn)) b.disabled = true;
  }

  async function load() {
    if (gone) return;
    try {
      show(await get(sp()));
    } catch (e) {
      if (e instanceof APIError && e.status === 404) {
        gone = true;
        replace(alerts, h('div', { class: 'alert error' }, `System ${id} does not exist (any more).`));
      } else {
        replace(alerts, h('div', { class: 'alert error' }, e.message));
      }
      return;
    }
    await loadSnapshots();
  }

  const ready = load().then(() => { if (!gone) loop(pollClock, POLL_COUNTERS_MS); });

  const mine = (ev) => ev.subject === id || ev.data?.id === id || ev.data?.system_id === id || ev.data?.system?.id === id;
  const unwatch = [
    watch(['io.machineserver.system.'], (ev) => {
      if (!mine(ev)) return;
      if (ev.type === 'io.machineserver.system.deleted.v1') { deleted(); return; }
      if (ev.type === 'io.machineserver.system.linkchanged.v1') {
        links.get(ev.data?.link?.name)?.faults(ev.data.link.faults);
        return;
      }
      if (ev.data?.system?.id === id) show(ev.data.system);
      else if (ev.data?.id === id && ev.data.state) show(ev.data);
      // A restore puts the links on anew: their counters start again.
      for (const v of links.values()) v.counters();
      if (ev.type === 'io.machineserver.system.restored.v1') {
        // Whoever restored it (this page or anyone): one event a restore.
        for (const v of links.values()) v.restart();
        loadSnapshots();
      }
    }, load),
    watch(['io.machineserver.systemsnapshot.'], (ev) => {
      if (ev.data?.system_id === id || ev.data?.snapshot?.system_id === id) loadSnapshots();
    }),
    // The nodes' own state changes (a node powered on alone, a crash).
    watch(['io.machineserver.session.'], (ev) => {
      const n = sys?.nodes?.find((x) => x.session_id === (ev.data?.id || ev.subject));
      if (!n || !ev.data?.state) return;
      n.state = ev.data.state;
      renderNodes();
    }),
  ];
  return {
    ready,
    cleanup: () => {
      unwatch.forEach((u) => u());
      for (const t of timers) clearTimeout(t.timer);
      timers.clear();
    },
  };
}

function clock(t) {
  if (!t) return '';
  const d = new Date(t);
  return d.toTimeString().slice(0, 8) + '.' + String(d.getMilliseconds()).padStart(3, '0');
}

// b64 decodes base64 to a byte string.
function b64(s) {
  try { return atob(s || ''); } catch { return ''; }
}

// printable shows bytes as text: ASCII as is, line ends and the rest
// escaped, so every byte that crossed is visible.
function printable(s) {
  let out = '';
  for (const ch of s) {
    const c = ch.charCodeAt(0);
    if (c === 0x0d) out += '\\r';
    else if (c === 0x0a) out += '\\n';
    else if (c === 0x09) out += '\\t';
    else if (c === 0x5c) out += '\\\\';
    else if (c >= 0x20 && c < 0x7f) out += ch;
    else out += '\\x' + c.toString(16).padStart(2, '0');
  }
  return out;
}

// pcapFrames reads a pcap file's Ethernet frames: time, addresses, type
// and length.
export function pcapFrames(buf) {
  const dv = new DataView(buf);
  if (buf.byteLength < 24) return [];
  const magic = dv.getUint32(0, true);
  const little = magic === 0xa1b2c3d4 || magic === 0xa1b23c4d;
  if (!little && dv.getUint32(0, false) !== 0xa1b2c3d4 && dv.getUint32(0, false) !== 0xa1b23c4d) return [];
  const nano = (little ? magic : dv.getUint32(0, false)) === 0xa1b23c4d;
  const mac = (at) => [...new Uint8Array(buf, at, 6)].map((b) => b.toString(16).padStart(2, '0')).join(':');
  const out = [];
  for (let at = 24; at + 16 <= buf.byteLength;) {
    const sec = dv.getUint32(at, little);
    const frac = dv.getUint32(at + 4, little);
    const incl = dv.getUint32(at + 8, little);
    const orig = dv.getUint32(at + 12, little);
    const start = at + 16;
    if (start + incl > buf.byteLength) break;
    if (incl >= 14) {
      out.push({
        time: new Date(sec * 1000 + (nano ? frac / 1e6 : frac / 1e3)).toISOString(),
        dst: mac(start), src: mac(start + 6), type: dv.getUint16(start + 12, false), length: orig,
      });
    }
    at = start + incl;
  }
  return out;
}
