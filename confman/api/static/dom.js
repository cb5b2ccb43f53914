// Small DOM helpers. Server-provided text only ever goes through textContent or
// attribute setters: never innerHTML.

/**
 * h("div", {class: "x", dataset: {testid: "y"}, onclick: fn}, child, "text", [more])
 * Children may be nodes, strings/numbers (become text nodes), arrays, null/false (skipped).
 */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [name, value] of Object.entries(attrs)) {
      if (value === undefined || value === null || value === false) continue;
      if (name === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
      else if (name === "dataset") Object.assign(el.dataset, value);
      else if (name === "testid") el.dataset.testid = value;
      else if (name === "text") el.textContent = String(value);
      else if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
      else if (name === "value" && "value" in el) el.value = value;
      else if (name === "checked" || name === "disabled" || name === "selected" || name === "hidden" || name === "readOnly" || name === "required") el[name] = Boolean(value);
      else if (value === true) el.setAttribute(name, "");
      else el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

export function clear(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A value as compact JSON text (strings quoted), for monospace display. */
export function jsonText(value) {
  if (value === undefined) return "—";
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/** A <code> element showing a JSON value, classed by type for colouring. */
export function valueNode(value, { pretty = false } = {}) {
  const type = value === null ? "null" : Array.isArray(value) ? "array" : typeof value;
  let text;
  if (value === undefined) text = "—";
  else if (pretty && value !== null && typeof value === "object") text = JSON.stringify(value, null, 2);
  else text = jsonText(value);
  const masked = typeof value === "string" && isMasked(value);
  if (masked) text = value;
  return h("code", { class: ["val", `val-${type}`, masked && "val-masked"], title: masked ? "secret (masked)" : null }, text);
}

const MASKED = /^\*{6,}(#[0-9a-fA-F]*)?$/;
export function isMasked(value) {
  return typeof value === "string" && MASKED.test(value);
}

export function layerBadge(layer) {
  const known = ["default", "database", "env_file", "environment"];
  const label = { default: "default", database: "database", env_file: "env file", environment: "environment" }[layer] ?? String(layer ?? "?");
  return h("span", { class: ["badge", "layer", `layer-${known.includes(layer) ? layer : "other"}`], dataset: { layer: String(layer ?? "") } }, label);
}

export function actionBadge(action) {
  const known = ["create", "update", "delete", "rollback", "import", "promote"];
  return h("span", { class: ["badge", "action", `action-${known.includes(action) ? action : "other"}`] }, String(action ?? "?"));
}

export function formatTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso);
  return d.toLocaleString(undefined, { year: "numeric", month: "short", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

export function relativeTime(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const s = Math.round((Date.now() - d.getTime()) / 1000);
  if (s < 5) return "just now";
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

export function timeNode(iso, { relative = false } = {}) {
  if (!iso) return h("span", { class: "muted" }, "—");
  return h("time", { datetime: String(iso), title: String(iso) }, relative ? relativeTime(iso) || formatTime(iso) : formatTime(iso));
}

/** Deep structural equality for JSON values. */
export function deepEqual(a, b) {
  if (a === b) return true;
  if (a === null || b === null || typeof a !== "object" || typeof b !== "object") return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a)) return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  const ka = Object.keys(a), kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  return ka.every((k) => Object.prototype.hasOwnProperty.call(b, k) && deepEqual(a[k], b[k]));
}

export function isPlainObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/**
 * A field name or dotted path as text that wraps only between its words: after "_", "."
 * and "-" (a <wbr> each), so `connect_timeout_seconds` never breaks inside "timeout".
 */
export function breakable(text) {
  const out = [];
  for (const part of String(text).split(/(?<=[_.-])/)) {
    if (out.length) out.push(document.createElement("wbr"));
    out.push(part);
  }
  return out;
}

// Python's literals as the JSON the dashboard and the API speak.
const LITERALS = { None: "null", True: "true", False: "false" };

/**
 * Docstring text as nodes: ``code`` and `code` spans become <code> (Python literals
 * shown as JSON), everything else stays text. Never HTML: the text is the server's.
 */
export function richText(text) {
  const out = [];
  const source = String(text ?? "");
  const span = /``([^`]+)``|`([^`]+)`/g;
  let last = 0;
  for (const m of source.matchAll(span)) {
    if (m.index > last) out.push(source.slice(last, m.index));
    const code = m[1] ?? m[2];
    out.push(h("code", { class: "doc-code" }, LITERALS[code] ?? code));
    last = m.index + m[0].length;
  }
  if (last < source.length) out.push(source.slice(last));
  return out;
}

/** The same text without markup, for attributes (tooltips). */
export function plainText(text) {
  return String(text ?? "").replace(/``([^`]+)``|`([^`]+)`/g, (_, a, b) => LITERALS[a ?? b] ?? (a ?? b));
}
