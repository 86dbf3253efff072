import { get, setCredential, APIError } from '../api.js';
import { h } from '../dom.js';

export function loginPage(root) {
  const key = h('input', { id: 'api-key', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true, placeholder: 'ms_…' });
  const error = h('p', { class: 'error', role: 'alert', hidden: true });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', {
    class: 'card login', onsubmit: async (e) => {
      e.preventDefault();
      submit.disabled = true;
      error.hidden = true;
      const k = key.value.trim();
      try {
        // Any read proves the key; capabilities is needed next anyway.
        await get('/api/v1/capabilities', { key: k });
        setCredential(k);
        location.hash = sessionStorage.getItem('machineserver.next') || '#/sessions';
        sessionStorage.removeItem('machineserver.next');
      } catch (err) {
        error.textContent = err instanceof APIError && err.status === 401 ? `This key is not accepted: ${err.message}` : err.message;
        error.hidden = false;
      } finally {
        submit.disabled = false;
      }
    },
  },
  h('h1', null, 'Sign in'),
  h('p', { class: 'muted' }, 'Use an API key of your tenant. It is kept in this tab only (sessionStorage) and sent with every request.'),
  h('label', { class: 'field' }, h('span', null, 'API key'), key),
  h('small', { class: 'muted' }, 'With ', h('code', null, 'make run'), ', a development admin key is in ', h('code', null, 'data/dev-api-key'), '.'),
  error,
  h('div', { class: 'actions' }, submit));
  const why = sessionStorage.getItem('machineserver.why');
  if (why) {
    sessionStorage.removeItem('machineserver.why');
    error.textContent = why;
    error.hidden = false;
  }
  root.append(form);
  key.focus();
}
