import { get, post, del, p, APIError } from '../api.js';
import { h, replace, card, when, badge, action, button, field, liveTable } from '../dom.js';
import { watch } from '../events.js';
import { ConsoleView } from '../terminal.js';
import { openReport } from '../report.js';
import { programSelect } from './programs.js';
import { boardSelect } from './sessions.js';

const ended = (st) => !['queued', 'running'].includes(st);

// steps parses the UART script box: one step per line, "send TEXT" (with
// \r, \n, \t and \\ escapes) or "wait REGEX".
function steps(text) {
  const out = [];
  for (const [i, raw] of text.split('\n').entries()) {
    const line = raw.trim();
    if (!line) continue;
    const [, verb, arg] = line.match(/^(send|wait)\s+(.*)$/) || [];
    if (verb === 'send') out.push({ send: arg.replace(/\\([rnt\\])/g, (_, c) => ({ r: '\r', n: '\n', t: '\t', '\\': '\\' })[c]) });
    else if (verb === 'wait') out.push({ wait_for: arg });
    else throw new Error(`UART script line ${i + 1}: start it with "send " or "wait "`);
  }
  return out;
}

export function jobsPage(root) {
  const rows = h('tbody');
  const total = h('span', { class: 'muted' });
  const input = (id, attrs) => h('input', { id, ...attrs });
  const name = input('job-name', { placeholder: 'smoke test' });
  const pass = input('job-pass', { placeholder: 'regular expression, e.g. ready' });
  const fail = input('job-fail', { placeholder: 'e.g. PANIC|assert' });
  const timeout = input('job-timeout', { value: '10s' });
  const exit = input('job-exit', { type: 'number', placeholder: 'any' });
  const script = h('textarea', { id: 'job-script', rows: 3, placeholder: 'send count\\r\nwait count=\\d+' });
  const coverage = input('job-coverage', { type: 'checkbox' });
  const grid = h('div', { class: 'row' }, field('Name', name));
  const submit = h('button', { type: 'submit', class: 'primary', id: 'job-create' }, 'Run job');
  const form = h('form', {
    onsubmit: (e) => {
      e.preventDefault();
      action(submit, async () => {
        const spec = {
          name: name.value.trim() || undefined,
          program_id: form.querySelector('#job-program').value,
          board_config: { board: form.querySelector('#job-board').value },
          timeout: timeout.value.trim() || undefined,
          pass_pattern: pass.value || undefined,
          fail_pattern: fail.value || undefined,
          expect_exit_code: exit.value === '' ? undefined : Number(exit.value),
          uart_script: script.value.trim() ? steps(script.value) : undefined,
          coverage: coverage.checked || undefined,
        };
        const j = await post('/api/v1/jobs', spec);
        location.hash = `#/jobs/${j.id}`;
      });
    },
  }, grid,
  h('div', { class: 'row' }, field('Pass when the console shows', pass), field('Fail when it shows', fail), field('Timeout', timeout, '100ms to 30m'), field('Expected exit code', exit, 'semihosting exit')),
  field('UART script', script, 'one step a line: send TEXT (\\r \\n escapes) or wait REGEX'),
  h('div', { class: 'actions' }, h('label', { class: 'check' }, coverage, 'collect coverage'), submit));
  Promise.all([programSelect({ id: 'job-program', required: true }), boardSelect({ id: 'job-board' }, 'mps2-an385')])
    .then(([pr, b]) => grid.append(field('Program', pr), field('Board', b)));

  root.append(
    h('div', { class: 'page-head' }, h('h1', null, 'Jobs'), total),
    card('New job', null, form),
    card(null, null, h('table', { id: 'jobs-table', class: 'list' },
      h('thead', null, h('tr', null, ['Job', 'State', 'Board', 'Program', 'Created', 'Duration', ''].map((c) => h('th', null, c)))),
      rows)));

  function row(j) {
    return h('tr', { dataset: { id: j.id } },
      h('td', null, h('a', { href: `#/jobs/${j.id}` }, j.name || j.id), h('div', { class: 'muted small' }, h('code', null, j.id))),
      h('td', { class: 'state' }, badge(j.state), j.reason && h('div', { class: 'muted small reason', title: j.reason }, j.reason)),
      h('td', null, j.board_config?.board || j.board_config?.processor?.model || ''),
      h('td', null, h('code', null, j.program_id || j.program_key || '')),
      h('td', null, when(j.created_at)),
      h('td', { class: 'num' }, j.duration_ms ? `${(j.duration_ms / 1000).toFixed(2)} s` : ''),
      h('td', { class: 'actions' }, !ended(j.state) && button('Cancel', (b) => action(b, async () => update(await del(p`/api/v1/jobs/${j.id}`))), 'small danger', { dataset: { action: 'cancel' } })));
  }

  const { update, load } = liveTable({
    rows, total, cols: 7, none: 'No jobs yet.', path: '/api/v1/jobs?page_size=100', key: 'jobs', row,
  });

  const unwatch = watch(['io.machineserver.job.'], (ev) => (ev.data?.id && ev.data.state ? update(ev.data) : load()), load);
  return { ready: load(), cleanup: unwatch };
}

// jobPage is one job: its verdict, live state and console (the session's
// while it runs, the stored log once it ended).
export function jobPage(root, id) {
  let j = null;
  let live = '';
  const title = h('h1', null, '…');
  const state = h('span', { id: 'job-state' });
  const verdict = h('div', { id: 'job-verdict' });
  const details = h('dl', { class: 'details' });
  const cancel = button('Cancel job', (b) => action(b, async () => show(await del(p`/api/v1/jobs/${id}`))), 'danger', { id: 'job-cancel' });
  const conStatus = h('span', { class: 'muted', id: 'job-console-status' });
  const termEl = h('div', { id: 'terminal', class: 'terminal' });
  const view = new ConsoleView(termEl, { readOnly: true, onStatus: (st, d) => { conStatus.textContent = d ? `${st}: ${d}` : st; } });

  root.append(
    h('div', { class: 'page-head' }, h('a', { class: 'back', href: '#/jobs' }, '← Jobs'), title, state, h('span', { class: 'spacer' }), cancel),
    verdict,
    h('div', { class: 'grid' },
      card(null, { class: 'card console' }, h('div', { class: 'card-head' }, h('h2', null, 'Console'), conStatus), h('div', { class: 'terminal-frame' }, termEl)),
      h('div', { class: 'side' }, card('Details', null, details))));

  function show(next) {
    j = next;
    title.textContent = j.name || `Job ${j.id}`;
    replace(state, badge(j.state));
    cancel.hidden = ended(j.state) || j.cancel_requested;
    const text = {
      queued: 'Waiting for a worker.', running: 'Running on the board now.', passed: 'Passed.', failed: 'Failed.',
      timed_out: 'Timed out.', error: 'Could not run.', cancelled: 'Cancelled.',
    }[j.state] || j.state;
    replace(verdict, h('div', { class: `alert verdict state-${j.state}` }, h('strong', null, text), j.reason && ` ${j.reason}`));
    const dd = (k, v) => v != null && v !== '' && [h('dt', null, k), h('dd', null, v)];
    replace(details,
      dd('Id', h('code', null, j.id)),
      dd('Program', h('code', null, j.program_id || j.program_key)),
      dd('Board', j.board_config?.board || JSON.stringify(j.board_config)),
      dd('Pass pattern', j.pass_pattern && h('code', null, j.pass_pattern)),
      dd('Fail pattern', j.fail_pattern && h('code', null, j.fail_pattern)),
      dd('Expected exit code', j.expect_exit_code),
      dd('UART script', j.uart_script?.length && h('pre', null, j.uart_script.map((st) => (st.send != null ? `send ${JSON.stringify(st.send)}` : `wait ${st.wait_for}`)).join('\n'))),
      dd('Timeout', j.timeout),
      dd('Exit code', j.exit_code),
      dd('Attempts', j.attempts),
      dd('Duration', j.duration_ms && `${(j.duration_ms / 1000).toFixed(2)} s`),
      dd('Worker', j.worker),
      dd('Session', j.session_id && h('code', null, j.session_id)),
      dd('Created', when(j.created_at)),
      dd('Coverage', j.coverage_report_id
        ? button('Open report', (b) => action(b, () => openReport(p`/api/v1/coverage/reports/${j.coverage_report_id}`, `Coverage of job ${j.id}`)), 'small', { id: 'job-coverage-open' })
        : j.coverage_error),
      // A failed recorded job's recording: replay it in a session, where
      // gdb can run it backwards.
      dd('Recording', j.recording_id
        ? button('Replay in a session', (b) => action(b, async () => {
          const s = await post(p`/api/v1/recordings/${j.recording_id}/sessions`, {});
          location.hash = `#/sessions/${s.id}`;
        }), 'small', { id: 'job-replay', title: 'a session that re-runs this run; power it on halted to debug it backwards' })
        : j.recording_error));
    followConsole();
  }

  // console follows the job: the live stream of its session while it
  // runs, the stored log once it ended.
  async function followConsole() {
    if (j.state === 'running' && j.session_id) {
      if (live !== j.session_id) {
        live = j.session_id;
        view.connect(j.session_id, 'uart0');
      }
      return;
    }
    if (!ended(j.state) || live === 'log') return;
    live = 'log';
    view.close();
    try {
      const text = await get(p`/api/v1/jobs/${id}/console`);
      view.show(text || '');
      conStatus.textContent = 'stored console log';
    } catch (e) {
      conStatus.textContent = e.message;
    }
  }

  async function load() {
    try {
      show(await get(p`/api/v1/jobs/${id}`));
    } catch (e) {
      replace(verdict, h('div', { class: 'alert error' }, e instanceof APIError && e.status === 404 ? `Job ${id} does not exist.` : e.message));
    }
  }

  const unwatch = watch(['io.machineserver.job.'], (ev) => {
    if ((ev.subject || ev.data?.id) === id && ev.data?.state) show(ev.data);
  }, load);
  return { ready: load(), cleanup: () => { unwatch(); view.dispose(); } };
}
