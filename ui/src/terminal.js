// A session's UART in a real terminal: xterm.js over the console
// WebSocket. A browser cannot put an Authorization header on a WebSocket,
// so each connection first asks for a short-lived console token of the
// session (POST .../tokens) and opens the stream with it as ?token=.

import { Terminal } from '@xterm/xterm';
import { FitAddon } from '@xterm/addon-fit';
import { p, post, wsURL } from './api.js';

const theme = {
  background: '#0f172a', foreground: '#e2e8f0', cursor: '#38bdf8', selectionBackground: '#334155',
};

export class ConsoleView {
  // onStatus(state, detail) hears connecting, connected, disconnected and
  // notices the server sends (such as input dropped while powered off).
  constructor(el, { onStatus = () => {}, readOnly = false } = {}) {
    this.onStatus = onStatus;
    this.gen = 0;
    this.term = new Terminal({
      cursorBlink: !readOnly, disableStdin: readOnly, fontSize: 13, scrollback: 5000, theme,
      fontFamily: 'ui-monospace, SFMono-Regular, "DejaVu Sans Mono", Menlo, Consolas, monospace',
    });
    this.fit = new FitAddon();
    this.term.loadAddon(this.fit);
    this.term.open(el);
    this.resize = new ResizeObserver(() => { try { this.fit.fit(); } catch { /* hidden */ } });
    this.resize.observe(el);
    const enc = new TextEncoder();
    this.term.onData((d) => this.send(enc.encode(d)));
    this.term.onBinary((d) => this.send(Uint8Array.from(d, (c) => c.charCodeAt(0))));
  }

  // connect streams session's port from the oldest byte the server keeps;
  // a dropped connection comes back by itself (and replays the history).
  async connect(session, port) {
    const gen = ++this.gen;
    this.ws?.close();
    this.session = session;
    this.port = port;
    this.onStatus('connecting');
    let tok;
    try {
      tok = await post(p`/api/v1/sessions/${session}/tokens`, { purpose: 'console', ttl: '1m' });
    } catch (e) {
      if (gen !== this.gen) return;
      this.onStatus('disconnected', e.message);
      this.later(gen, 5000);
      return;
    }
    if (gen !== this.gen) return;
    const ws = new WebSocket(wsURL(p`/api/v1/sessions/${session}/stream/console`, { port, token: tok.token }));
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.gen) return;
      this.term.reset();
      this.onStatus('connected');
    };
    ws.onmessage = (m) => {
      if (gen !== this.gen) return;
      if (typeof m.data !== 'string') {
        this.term.write(new Uint8Array(m.data));
        return;
      }
      // Text frames are the server's notices, never UART output.
      let text = m.data;
      try { text = JSON.parse(m.data).error || text; } catch { /* plain text */ }
      this.onStatus('notice', text);
    };
    ws.onclose = (e) => {
      if (gen !== this.gen) return;
      this.onStatus('disconnected', e.reason || (e.code === 1006 ? 'connection lost' : ''));
      if (e.reason !== 'session deleted') this.later(gen, 2000);
    };
  }

  later(gen, ms) {
    setTimeout(() => { if (gen === this.gen) this.connect(this.session, this.port); }, ms);
  }

  send(bytes) {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(bytes);
  }

  // show puts text in the terminal, for a log that is not a live stream.
  show(text) {
    this.term.reset();
    this.term.write(text.replace(/\r?\n/g, '\r\n'));
  }

  clear() { this.term.clear(); }

  focus() { this.term.focus(); }

  close() {
    this.gen++;
    this.ws?.close();
    this.ws = null;
  }

  dispose() {
    this.close();
    this.resize.disconnect();
    this.term.dispose();
  }
}
