// Where a stored field came from: the base or an environment's overlay, and its version.
// The document's `sources` name database layers "base v7" / "staging v3" (detail), as
// `explain()` does; explicit fields (environment, version), when the server sends them, win.

import { h } from "./dom.js";
import { isBase, envName } from "./env.js";

const LABEL = /^([a-z][a-z0-9-]*) v(\d+)(, hidden)?$/;

/**
 * {scope: "base"|"overlay", environment, version, hidden} for a database field, else null
 * (a model default, an env file, a variable).
 */
export function provenance(source) {
  if (!source || source.layer !== "database") return null;
  let environment = source.environment;
  let version = typeof source.version === "number" ? source.version : null;
  let hidden = false;
  const m = LABEL.exec(String(source.detail ?? "").trim().replace(/^database \((.*)\)$/, "$1"));
  if (m) {
    if (environment === undefined) environment = m[1];
    if (version === null) version = Number(m[2]);
    hidden = Boolean(m[3]);
  }
  if (environment === undefined) return null;
  const scope = isBase(environment) ? "base" : "overlay";
  return { scope, environment: envName(environment), version, hidden };
}

/** A badge: "base v7" or "staging v3" (overlay), or null when the field is not stored. */
export function originBadge(source, { testid } = {}) {
  const p = provenance(source);
  if (!p) return null;
  const label = `${p.environment}${p.version !== null ? ` v${p.version}` : ""}`;
  return h("span", {
    class: ["badge", "origin", `origin-${p.scope}`],
    dataset: { origin: p.scope },
    testid,
    title: p.scope === "base" ? "inherited from the base document" : `set by the ${p.environment} overlay`,
  }, p.scope === "overlay" ? [h("span", { class: "origin-kind" }, "overlay"), h("span", {}, label)] : label);
}

/** A comparison side's source text ("database (base v7)", "default", "absent", ...) as a badge. */
export function sourceText(text) {
  const raw = String(text ?? "");
  const db = /^database \((.*)\)$/.exec(raw);
  if (db) {
    const badge = originBadge({ layer: "database", detail: db[1] });
    if (badge) return badge;
  }
  const hidden = /^hidden \((.*)\)$/.exec(raw);
  if (hidden) return h("span", { class: "badge origin origin-hidden", title: "hidden in this environment (a tombstone overlay)" }, `hidden · ${hidden[1]}`);
  return h("span", { class: ["badge", "origin", `origin-${raw === "absent" ? "absent" : "default"}`] }, raw || "?");
}
