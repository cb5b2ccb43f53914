// Server-sent events over fetch(): EventSource cannot send an Authorization header.
// Parses the stream as the HTML spec says (event / id / data / retry fields, blank line
// dispatches, lines starting with ":" are comments) and reconnects after a delay with
// Last-Event-ID, so the server replays what was missed.

export class EventStream {
  /**
   * @param {object} o
   * @param {string} o.url
   * @param {() => string|null} o.token
   * @param {(ev: {event: string, id: string|null, data: string}) => void} o.onEvent
   * @param {(state: "connecting"|"open"|"closed"|"error", info?: string) => void} o.onState
   * @param {() => void} o.onUnauthorized
   * @param {(newestSeq: number|null) => void} [o.onReset] the server cannot resume from
   *   the last id (409: another or a restored database, or a pruned log): what the page
   *   shows may be stale; the stream starts afresh from the server's "now"
   */
  constructor({ url, token, onEvent, onState, onUnauthorized, onReset }) {
    this.url = url;
    this.token = token;
    this.onEvent = onEvent;
    this.onState = onState || (() => {});
    this.onUnauthorized = onUnauthorized || (() => {});
    this.onReset = onReset || (() => {});
    this.lastEventId = null;
    this.retryMs = 2000;
    this.failures = 0;
    this.stopped = true;
    this.controller = null;
    this.timer = null;
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    this._connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    if (this.controller) this.controller.abort();
    this.controller = null;
    this.onState("closed");
  }

  /** Drop the current connection and reconnect at once (keeps Last-Event-ID). */
  reconnectNow() {
    if (this.stopped) return;
    clearTimeout(this.timer);
    if (this.controller) this.controller.abort();
    this.failures = 0;
    this._connect();
  }

  _schedule(info) {
    if (this.stopped) return;
    this.failures += 1;
    const delay = Math.min(this.retryMs * Math.min(this.failures, 5), 30000);
    this.onState("error", `${info}; retrying in ${Math.round(delay / 1000)} s`);
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._connect(), delay);
  }

  async _connect() {
    if (this.stopped) return;
    const controller = new AbortController();
    this.controller = controller;
    this.onState("connecting");
    const headers = { Accept: "text/event-stream", "Cache-Control": "no-cache" };
    const token = this.token();
    if (token) headers.Authorization = `Bearer ${token}`;
    if (this.lastEventId !== null && this.lastEventId !== "") headers["Last-Event-ID"] = this.lastEventId;
    let response;
    try {
      response = await fetch(this.url, { headers, signal: controller.signal, cache: "no-store" });
    } catch (err) {
      if (controller.signal.aborted) return;
      this._schedule("cannot connect");
      return;
    }
    if (response.status === 401) {
      this.stopped = true;
      this.onState("closed");
      this.onUnauthorized();
      return;
    }
    if (response.status === 409 && this.lastEventId !== null) {
      // The change log cannot serve Last-Event-ID: resuming with it again would fail
      // forever. Forget it, reconnect at once (the server says "ready" from now).
      let newest = null;
      try {
        newest = (await response.json()).newest_seq ?? null;
      } catch {}
      this.lastEventId = null;
      this.onState("error", "the server cannot resume from this page's last change; starting afresh");
      try {
        this.onReset(newest);
      } catch (err) {
        console.error("reset handler failed", err);
      }
      if (!this.stopped && !controller.signal.aborted) this._connect();
      return;
    }
    if (!response.ok || !response.body) {
      this._schedule(`HTTP ${response.status}`);
      return;
    }
    this.failures = 0;
    this.onState("open");
    try {
      await this._read(response.body, controller.signal);
    } catch (err) {
      if (controller.signal.aborted) return;
    }
    if (controller.signal.aborted || this.stopped) return;
    this._schedule("disconnected");
  }

  async _read(body, signal) {
    const reader = body.getReader();
    const decoder = new TextDecoder("utf-8");
    let buffer = "";
    let event = { event: "", data: [], id: null };
    let firstChunk = true;
    const dispatch = () => {
      if (event.id !== null) this.lastEventId = event.id;
      if (event.data.length) {
        const ev = { event: event.event || "message", id: this.lastEventId, data: event.data.join("\n") };
        try {
          this.onEvent(ev);
        } catch (err) {
          console.error("event handler failed", err);
        }
      }
      event = { event: "", data: [], id: null };
    };
    const line = (text) => {
      if (text === "") return dispatch();
      if (text.startsWith(":")) return; // comment / keep-alive
      const colon = text.indexOf(":");
      let field = text, value = "";
      if (colon >= 0) {
        field = text.slice(0, colon);
        value = text.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
      }
      if (field === "event") event.event = value;
      else if (field === "data") event.data.push(value);
      else if (field === "id") {
        if (!value.includes("\0")) event.id = value;
      } else if (field === "retry") {
        if (/^\d+$/.test(value)) this.retryMs = Math.max(500, Number(value));
      }
    };
    for (;;) {
      const { value, done } = await reader.read();
      if (done || signal.aborted) break;
      let chunk = decoder.decode(value, { stream: true });
      if (firstChunk) {
        if (chunk.startsWith("\uFEFF")) chunk = chunk.slice(1);
        firstChunk = false;
      }
      buffer += chunk;
      // Split on CRLF, LF or CR; keep an incomplete last line (and a trailing CR that
      // may be the first half of a CRLF) in the buffer.
      let start = 0;
      for (let i = 0; i < buffer.length; i++) {
        const c = buffer[i];
        if (c === "\n" || c === "\r") {
          if (c === "\r" && i === buffer.length - 1) break;
          line(buffer.slice(start, i));
          if (c === "\r" && buffer[i + 1] === "\n") i++;
          start = i + 1;
        }
      }
      buffer = buffer.slice(start);
    }
    // An event without its terminating blank line is discarded, as the spec says.
  }
}
