// The web UI: a hash router over a few pages. Each page renders into
// <main> and returns a cleanup function (closing its sockets and event
// watches) that runs when the user leaves it.

import '@xterm/xterm/css/xterm.css';
import './style.css';
import { credential, setCredential, onUnauthorized, forget } from './api.js';
import * as events from './events.js';
import { loginPage } from './pages/login.js';
import { programsPage } from './pages/programs.js';
import { sessionsPage } from './pages/sessions.js';
import { sessionPage } from './pages/session.js';
import { jobsPage, jobPage } from './pages/jobs.js';
import { systemsPage, systemPage } from './pages/systems.js';

const routes = [
  [/^#\/login$/, loginPage, 'login'],
  [/^#\/programs$/, programsPage, 'programs'],
  [/^#\/sessions$/, sessionsPage, 'sessions'],
  [/^#\/sessions\/([\w-]+)$/, sessionPage, 'session'],
  [/^#\/systems$/, systemsPage, 'systems'],
  [/^#\/systems\/([\w-]+)$/, systemPage, 'system'],
  [/^#\/jobs$/, jobsPage, 'jobs'],
  [/^#\/jobs\/([\w-]+)$/, jobPage, 'job'],
];

const main = document.getElementById('main');
let cleanup = () => {};
let first = true;

async function route() {
  let hash = location.hash || '#/sessions';
  const signedIn = !!credential();
  if (!signedIn && hash !== '#/login') {
    sessionStorage.setItem('machineserver.next', hash);
    hash = '#/login';
    history.replaceState(null, '', hash);
  }
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('signout').hidden = !signedIn;
  document.getElementById('live').hidden = !signedIn;
  if (signedIn) events.start();
  for (const a of document.querySelectorAll('#nav a')) {
    a.classList.toggle('active', hash.startsWith(`#/${a.dataset.nav}`));
  }
  const [re, page, name] = routes.find(([r]) => r.test(hash)) || [/^/, notFound, 'none'];
  cleanup();
  main.replaceChildren();
  // What the last page said is no news on this one.
  document.getElementById('toasts').replaceChildren();
  const args = hash.match(re).slice(1);
  let ready;
  ({ cleanup = () => {}, ready } = page(main, ...args) || {});
  document.documentElement.dataset.page = name;
  try { await ready; } catch { /* the page shows its own errors */ }
  if (first) {
    first = false;
    // Time to interactive: the first page has its data on screen.
    performance.mark('interactive');
  }
}

function notFound(root) {
  root.append(Object.assign(document.createElement('p'), { textContent: 'No such page.' }));
}

function signOut(why) {
  setCredential('');
  forget();
  events.stop();
  // The sign-in page says why (a toast would go with the page change).
  if (why) sessionStorage.setItem('machineserver.why', why);
  location.hash = '#/login';
}

onUnauthorized((e) => signOut(`Signed out: ${e.message}`));
document.getElementById('signout').addEventListener('click', () => signOut());

const live = document.getElementById('live');
const liveText = { live: 'live', connecting: 'connecting…', polling: 'polling', off: '' };
events.onStatus((s, detail) => {
  live.dataset.status = s;
  live.textContent = liveText[s];
  live.title = s === 'live' ? 'state changes arrive as they happen (event stream)' : detail || '';
});

addEventListener('hashchange', route);
route();
