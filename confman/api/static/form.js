// An edit form generated from a pydantic v2 JSON Schema, and the JSON merge patch
// (RFC 7386) of what the user changed.
//
// Widgets: string -> text, integer/number -> number, boolean -> checkbox, enum -> select,
// SecretStr (format "password" / writeOnly) -> password (empty = unchanged), objects with
// `properties` (also via $ref/$defs) -> nested fieldsets, anything else (arrays, maps,
// unions) -> a JSON textarea. `anyOf [X, null]` makes X optional; a property's
// `x-required-when: {sibling: [values]}` (set by the model) says when it is required anyway.

import { h, deepEqual, isPlainObject, isMasked, layerBadge, breakable, richText } from "./dom.js";

const MAX_DEPTH = 8;
let uid = 0;

/** Parse the "Attributes:" section of a Google-style docstring into {name: text}. */
export function attributeDocs(description) {
  const out = {};
  if (typeof description !== "string") return out;
  const lines = description.split("\n");
  const start = lines.findIndex((l) => /^\s*Attributes:\s*$/.test(l));
  if (start < 0) return out;
  let current = null;
  let baseIndent = null;
  for (const raw of lines.slice(start + 1)) {
    if (!raw.trim()) {
      current = null;
      continue;
    }
    const indent = raw.length - raw.trimStart().length;
    if (baseIndent === null) baseIndent = indent;
    if (indent < baseIndent) break;
    const m = indent === baseIndent ? /^\s*([\w, ]+):\s*(.*)$/.exec(raw) : null;
    if (m) {
      current = m[1].split(",").map((s) => s.trim()).filter(Boolean);
      for (const name of current) out[name] = m[2].trim();
    } else if (current) {
      for (const name of current) out[name] = `${out[name]} ${raw.trim()}`.trim();
    }
  }
  for (const k of Object.keys(out)) out[k] = out[k].replace(/``/g, "`");
  return out;
}

/** Summary of a docstring: its first paragraph. */
export function summary(description) {
  if (typeof description !== "string") return "";
  return description.split(/\n\s*\n/)[0].replace(/\s+/g, " ").trim();
}

function resolve(root, schema, depth = 0) {
  if (!schema || typeof schema !== "object") return {};
  let s = schema;
  let guard = 0;
  while (guard++ < 10) {
    if (typeof s.$ref === "string") {
      const m = /^#\/(\$defs|definitions)\/(.+)$/.exec(s.$ref);
      const target = m && root[m[1]] ? root[m[1]][decodeURIComponent(m[2]).replace(/~1/g, "/").replace(/~0/g, "~")] : null;
      const { $ref, ...rest } = s;
      s = { ...(target || {}), ...rest };
      if (!target) break;
    } else if (Array.isArray(s.allOf) && s.allOf.length === 1) {
      const { allOf, ...rest } = s;
      s = { ...allOf[0], ...rest };
    } else break;
  }
  return s;
}

function isNullSchema(s) {
  return s && (s.type === "null" || (Array.isArray(s.enum) && s.enum.length === 1 && s.enum[0] === null));
}

/**
 * Classify a property schema: {kind, schema, nullable}.
 * kind: text | secret | number | integer | boolean | enum | object | json
 */
function classify(root, rawSchema, depth) {
  let s = resolve(root, rawSchema, depth);
  let nullable = false;
  const union = s.anyOf || s.oneOf;
  if (Array.isArray(union)) {
    const nonNull = union.filter((x) => !isNullSchema(resolve(root, x, depth)));
    nullable = nonNull.length < union.length;
    if (nonNull.length === 1) {
      const { anyOf, oneOf, ...outer } = s;
      s = { ...resolve(root, nonNull[0], depth), ...outer };
    } else {
      const members = nonNull.map((x) => resolve(root, x, depth));
      const scalar = ["string", "number", "integer", "boolean"];
      if (members.every((m) => scalar.includes(m.type) && !Array.isArray(m.enum) && m.format !== "password" && !m.writeOnly)) {
        return { kind: "scalar", schema: { ...s, types: members.map((m) => m.type) }, nullable };
      }
      return { kind: "json", schema: s, nullable };
    }
  }
  let type = s.type;
  if (Array.isArray(type)) {
    const nonNull = type.filter((t) => t !== "null");
    nullable = nullable || nonNull.length < type.length;
    type = nonNull.length === 1 ? nonNull[0] : undefined;
    if (type === undefined) return { kind: "json", schema: s, nullable };
  }
  if (Array.isArray(s.enum)) {
    const values = s.enum.filter((v) => v !== null);
    if (values.length < s.enum.length) nullable = true;
    if (values.every((v) => ["string", "number", "boolean"].includes(typeof v))) return { kind: "enum", schema: { ...s, enum: values }, nullable };
    return { kind: "json", schema: s, nullable };
  }
  if ("const" in s) return { kind: "json", schema: s, nullable };
  if (type === "string") {
    if (s.format === "password" || s.writeOnly === true) return { kind: "secret", schema: s, nullable };
    return { kind: "text", schema: s, nullable };
  }
  if (type === "integer") return { kind: "integer", schema: s, nullable };
  if (type === "number") return { kind: "number", schema: s, nullable };
  if (type === "boolean") return { kind: "boolean", schema: s, nullable };
  if (type === "object" && isPlainObject(s.properties) && depth < MAX_DEPTH && !s.additionalProperties && !s.patternProperties) {
    return { kind: "object", schema: s, nullable };
  }
  if (type === undefined && isPlainObject(s.properties) && depth < MAX_DEPTH) return { kind: "object", schema: s, nullable };
  return { kind: "json", schema: s, nullable };
}

/** A property's `x-required-when` as {field, values}, or null. */
function requiredWhen(s, rawSchema) {
  const when = (s && s["x-required-when"]) || (rawSchema && rawSchema["x-required-when"]);
  if (!isPlainObject(when)) return null;
  const [field, values] = Object.entries(when)[0] || [];
  return field && Array.isArray(values) ? { field, values } : null;
}

function hints(kind, s, nullable, when = null) {
  const parts = [];
  const typeName = { scalar: (s.types || []).join(" | "), text: "string", secret: "secret", integer: "integer", number: "number", boolean: "boolean", enum: "one of", json: jsonTypeName(s) }[kind];
  if (typeName && kind !== "enum") parts.push(typeName);
  if (s.format && kind !== "secret") parts.push(s.format);
  if (s.exclusiveMinimum !== undefined) parts.push(`> ${s.exclusiveMinimum}`);
  if (s.minimum !== undefined) parts.push(`≥ ${s.minimum}`);
  if (s.exclusiveMaximum !== undefined) parts.push(`< ${s.exclusiveMaximum}`);
  if (s.maximum !== undefined) parts.push(`≤ ${s.maximum}`);
  if (s.minLength !== undefined) parts.push(`min length ${s.minLength}`);
  if (s.maxLength !== undefined) parts.push(`max length ${s.maxLength}`);
  if (s.minItems !== undefined) parts.push(`min ${s.minItems} items`);
  if (s.pattern !== undefined) parts.push(`pattern ${s.pattern}`);
  if (when) parts.push(`required for ${when.field} ${when.values.join(", ")}`);
  else if (nullable) parts.push("optional");
  return parts.join(" · ");
}

function jsonTypeName(s) {
  if (s.type === "array") return "JSON list";
  if (s.type === "object") return "JSON object";
  return "JSON";
}

function getAt(obj, parts) {
  let cur = obj;
  for (const p of parts) {
    if (!isPlainObject(cur) || !(p in cur)) return undefined;
    cur = cur[p];
  }
  return cur;
}

/** A merge patch turning `before` into `after` (both plain objects). */
export function mergeDiff(before, after) {
  const patch = {};
  for (const k of Object.keys(before)) if (!(k in after)) patch[k] = null;
  for (const [k, v] of Object.entries(after)) {
    const old = before[k];
    if (isPlainObject(old) && isPlainObject(v)) {
      const sub = mergeDiff(old, v);
      if (Object.keys(sub).length) patch[k] = sub;
    } else if (!(k in before) || !deepEqual(old, v)) {
      patch[k] = v;
    }
  }
  return patch;
}

/** Dotted paths of masked secret values found in a JSON value. */
export function maskedPaths(value, prefix = "") {
  const out = [];
  if (isMasked(value)) out.push(prefix || "(value)");
  else if (Array.isArray(value)) value.forEach((v, i) => out.push(...maskedPaths(v, prefix ? `${prefix}.${i}` : String(i))));
  else if (isPlainObject(value)) for (const [k, v] of Object.entries(value)) out.push(...maskedPaths(v, prefix ? `${prefix}.${k}` : k));
  return out;
}

export class SchemaForm {
  /**
   * @param {object} schema the namespace's JSON Schema
   * @param {object|null} value the document's effective value (secrets masked); null for a new item
   * @param {object} opts
   * @param {Array} opts.sources the document's `sources`
   * @param {"edit"|"create"} opts.mode
   * @param {boolean} opts.readOnly
   */
  constructor(schema, value, { sources = [], mode = "edit", readOnly = false } = {}) {
    this.root = schema || {};
    this.mode = mode;
    this.value = value || {};
    this.sources = Array.isArray(sources) ? sources : [];
    this.fields = new Map(); // path -> node (leaves and groups)
    this.listeners = [];
    this.summaryEl = h("div", { class: "error-summary", role: "alert", testid: "error-summary", hidden: true });
    const rootSchema = resolve(this.root, this.root);
    this.tree = this._group(rootSchema, [], 0, { nullable: false, isRoot: true });
    this.body = h("fieldset", { class: "form-root", disabled: readOnly }, this.tree.element);
    this.element = h("div", { class: "schema-form" }, this.summaryEl, this.body);
    const changed = () => {
      this._markChanged();
      for (const fn of this.listeners) fn();
    };
    this.element.addEventListener("input", changed);
    this.element.addEventListener("change", changed);
  }

  onChange(fn) {
    this.listeners.push(fn);
  }

  _pins(path) {
    return this.sources.filter(
      (s) => (s.layer === "environment" || s.layer === "env_file") && typeof s.path === "string" &&
        (s.path === path || s.path.startsWith(path + ".") || path.startsWith(s.path + ".")),
    );
  }

  _pinNote(path) {
    const pins = this._pins(path);
    if (!pins.length) return null;
    const layers = [...new Set(pins.map((p) => p.layer))];
    const details = [...new Set(pins.map((p) => p.detail).filter(Boolean))];
    return h("div", { class: "pin-note", testid: `pinned-${path}` },
      h("span", { class: "pin-label" }, "pinned"),
      layers.map((l) => layerBadge(l)),
      details.length ? h("code", {}, details.join(", ")) : null,
      h("span", { class: "pin-why" }, "A saved value is stored and audited, but readers keep seeing the override."));
  }

  _group(schema, parts, depth, { nullable, isRoot = false, name = "", required = false, doc = "" }) {
    const path = parts.join(".");
    const docs = attributeDocs(schema.description);
    const props = isPlainObject(schema.properties) ? schema.properties : {};
    const requiredSet = new Set(Array.isArray(schema.required) ? schema.required : []);
    const original = isRoot ? this.value : getAt(this.value, parts);
    const node = { kind: "object", path, parts, nullable, required, children: [], original, schema, toggle: null };
    const childEls = [];
    for (const [prop, propSchema] of Object.entries(props)) {
      const childParts = [...parts, prop];
      const info = classify(this.root, propSchema, depth + 1);
      const doc = docs[prop] || summary(propSchema && propSchema.description) || "";
      let child;
      if (info.kind === "object") {
        child = this._group(info.schema, childParts, depth + 1, { nullable: info.nullable, name: prop, required: requiredSet.has(prop), doc });
      } else {
        child = this._leaf(info, childParts, { name: prop, required: requiredSet.has(prop), doc, rawSchema: propSchema });
      }
      child.name = prop;
      node.children.push(child);
      childEls.push(child.element);
    }
    this._wireConditions(node.children);
    if (isRoot) {
      node.element = h("div", { class: "group-body root-body" }, childEls.length ? childEls : h("p", { class: "muted" }, "This model has no fields."));
      this.fields.set("", node);
      return node;
    }
    const present = original !== null && original !== undefined;
    const body = h("div", { class: "group-body", hidden: nullable && this.mode === "edit" ? !present : false }, childEls);
    const errorEl = h("p", { class: "field-error", testid: `error-${path}`, hidden: true, id: `err-${++uid}` });
    let toggle = null;
    if (nullable) {
      toggle = h("input", { type: "checkbox", testid: `field-${path}`, checked: this.mode === "edit" ? present : false, "aria-describedby": errorEl.id });
      body.hidden = !toggle.checked;
      toggle.addEventListener("change", () => (body.hidden = !toggle.checked));
      node.toggle = toggle;
    }
    const legend = h("legend", {},
      h("span", { class: "field-name" }, breakable(name)),
      toggle ? h("label", { class: "toggle-set" }, toggle, " set") : null,
      nullable ? h("span", { class: "type-hint" }, "optional object") : null);
    const docText = doc || summary(schema.description);
    node.element = h("fieldset", { class: "group", dataset: { path } },
      legend,
      docText ? h("p", { class: "help" }, richText(docText)) : null,
      node.children.length ? null : this._pinNote(path),
      errorEl,
      body);
    node.errorEl = errorEl;
    node.fieldEl = node.element;
    this.fields.set(path, node);
    return node;
  }

  /** Show "required" on fields whose `x-required-when` sibling has a matching value. */
  _wireConditions(children) {
    for (const child of children) {
      if (!child.when || !child.reqEl) continue;
      const other = children.find((c) => c.name === child.when.field);
      if (!other || !other.input) continue;
      const update = () => {
        const r = other.read();
        child.reqEl.hidden = !(r && !r.error && !r.unset && child.when.values.includes(r.value));
      };
      other.input.addEventListener("change", update);
      update();
    }
  }

  _leaf(info, parts, { name, required, doc, rawSchema }) {
    const path = parts.join(".");
    const s = info.schema;
    let kind = info.kind;
    const nullable = info.nullable;
    const original = getAt(this.value, parts);
    if (kind === "text" && isMasked(original)) kind = "secret";
    const def = "default" in s ? s.default : rawSchema && "default" in rawSchema ? rawSchema.default : undefined;
    const start = this.mode === "create" ? (def !== undefined ? def : undefined) : original;
    const id = `f-${++uid}`;
    const errorEl = h("p", { class: "field-error", testid: `error-${path}`, hidden: true, id: `${id}-err` });
    const node = {};
    const common = { id, testid: `field-${path}`, name: path, "aria-describedby": `${id}-err` };
    let control, input, read, clearBox = null;

    if (kind === "boolean" && !nullable) {
      input = h("input", { ...common, type: "checkbox", checked: start === true });
      control = h("label", { class: "switch" }, input, h("span", { class: "switch-label" }, start === true ? "true" : "false"));
      input.addEventListener("change", () => (control.lastChild.textContent = input.checked ? "true" : "false"));
      read = () => ({ value: input.checked });
    } else if (kind === "boolean" || kind === "enum") {
      const options = kind === "boolean" ? [true, false] : s.enum.slice();
      if (start !== undefined && start !== null && !options.some((o) => o === start)) options.push(start);
      input = h("select", common);
      const noneLabel = nullable ? "— none —" : "— choose —";
      if (nullable || start === undefined || start === null) input.appendChild(h("option", { value: nullable ? "null" : "" }, noneLabel));
      for (const opt of options) input.appendChild(h("option", { value: JSON.stringify(opt) }, String(opt)));
      input.value = start === undefined || start === null ? (nullable ? "null" : "") : JSON.stringify(start);
      control = input;
      read = () => (input.value === "" ? { unset: true } : { value: JSON.parse(input.value) });
    } else if (kind === "integer" || kind === "number") {
      input = h("input", { ...common, type: "number", inputmode: kind === "integer" ? "numeric" : "decimal", step: kind === "integer" ? "1" : "any" });
      if (s.minimum !== undefined) input.min = String(s.minimum);
      if (s.maximum !== undefined) input.max = String(s.maximum);
      input.value = typeof start === "number" ? String(start) : "";
      if (nullable) input.placeholder = "none";
      control = input;
      read = () => {
        const text = input.value.trim();
        if (text === "") {
          if (input.validity && input.validity.badInput) return { error: "Not a number" };
          if (nullable) return { value: null };
          return this.mode === "create" ? { unset: true } : { error: "A value is required" };
        }
        const n = Number(text);
        if (!Number.isFinite(n)) return { error: "Not a number" };
        if (kind === "integer" && !Number.isInteger(n)) return { error: "Must be a whole number" };
        return { value: n };
      };
    } else if (kind === "secret") {
      input = h("input", { ...common, type: "password", autocomplete: "new-password", spellcheck: "false" });
      const isSet = original !== null && original !== undefined && this.mode === "edit";
      input.placeholder = isSet ? `unchanged (${typeof original === "string" ? original : "set"})` : "not set";
      const parts2 = [input];
      if (nullable && isSet) {
        clearBox = h("input", { type: "checkbox", testid: `field-${path}-clear` });
        clearBox.addEventListener("change", () => {
          input.disabled = clearBox.checked;
          if (clearBox.checked) input.value = "";
        });
        parts2.push(h("label", { class: "clear-secret" }, clearBox, " remove"));
      }
      control = h("div", { class: "secret-control" }, parts2);
      read = () => {
        if (clearBox && clearBox.checked) return { value: null };
        if (input.value === "") return { unset: true };
        if (isMasked(input.value)) return { error: "Enter the new secret itself, not its masked form" };
        return { value: input.value };
      };
    } else if (kind === "scalar") {
      // A union of scalars (e.g. number | string): one line, read as JSON when it parses
      // as an allowed type, else as a string when strings are allowed.
      const types = s.types || [];
      input = h("input", { ...common, type: "text", spellcheck: "false", autocomplete: "off" });
      input.value = start === undefined || start === null ? "" : typeof start === "string" ? start : JSON.stringify(start);
      if (nullable) input.placeholder = "none";
      control = input;
      read = () => {
        const t = input.value.trim();
        if (t === "") {
          if (nullable) return { value: null };
          return this.mode === "create" ? { unset: true } : { error: "A value is required" };
        }
        let parsed;
        try {
          parsed = JSON.parse(t);
        } catch {
          parsed = undefined;
        }
        const fits = (v) => (typeof v === "number" && (types.includes("number") || (types.includes("integer") && Number.isInteger(v)))) ||
          (typeof v === "boolean" && types.includes("boolean")) || (typeof v === "string" && types.includes("string"));
        if (parsed !== undefined && fits(parsed)) {
          // Keep a string value a string when the original was one and it still reads the same.
          if (typeof parsed !== "string" && types.includes("string") && typeof node.original === "string" && node.original === input.value) return { value: input.value };
          return { value: parsed };
        }
        if (types.includes("string")) return { value: input.value };
        return { error: `Expected ${types.join(" or ")}` };
      };
    } else if (kind === "text") {
      const long = s.maxLength === undefined || s.maxLength > 300;
      input = h("input", { ...common, type: "text", spellcheck: "false", autocomplete: "off" });
      if (s.maxLength !== undefined) input.maxLength = s.maxLength;
      if (s.format === "date-time") input.placeholder = "YYYY-MM-DDTHH:MM:SSZ";
      else if (s.format === "uri") input.placeholder = "https://…";
      if (nullable && !input.placeholder) input.placeholder = "none";
      input.value = typeof start === "string" ? start : start === undefined || start === null ? "" : String(start);
      if (long) input.classList.add("wide");
      control = input;
      read = () => {
        if (input.value === "") {
          if (nullable) return { value: null };
          if (this.mode === "create" && start === undefined) return { unset: true };
        }
        return { value: input.value };
      };
    } else {
      kind = "json";
      const text = start === undefined ? "" : JSON.stringify(start, null, 2);
      const rows = Math.min(14, Math.max(2, text.split("\n").length));
      input = h("textarea", { ...common, rows, spellcheck: "false", autocomplete: "off", class: "json-input" });
      input.value = text;
      if (nullable) input.placeholder = "null";
      control = input;
      read = () => {
        const t = input.value.trim();
        if (t === "") {
          if (nullable) return { value: null };
          return this.mode === "create" ? { unset: true } : { error: "Enter a JSON value" };
        }
        try {
          return { value: JSON.parse(t) };
        } catch (err) {
          return { error: `Invalid JSON: ${err.message}` };
        }
      };
    }

    const when = required ? null : requiredWhen(s, rawSchema);
    const hint = hints(kind, s, nullable, when);
    const hintText = kind === "json" ? `${hint} — edit as JSON` : hint;
    const pin = this._pinNote(path);
    const reqEl = required || when ? h("span", { class: "req", title: "required", hidden: !required }, "required") : null;
    const element = h("div", { class: ["field", `kind-${kind}`, pin && "pinned"], dataset: { path } },
      h("div", { class: "field-head" },
        h("label", { for: id, class: "field-name" }, breakable(name)),
        reqEl,
        h("span", { class: "type-hint" }, hintText),
        h("span", { class: "changed-dot", title: "changed", "aria-hidden": "true" })),
      h("div", { class: "field-control" }, control),
      doc ? h("p", { class: "help" }, richText(doc)) : null,
      pin,
      errorEl);
    Object.assign(node, { kind, path, parts, nullable, required, when, reqEl, original, def, start, read, input, element, errorEl, fieldEl: element });
    this.fields.set(path, node);
    return node;
  }

  // ---- values -------------------------------------------------------------------------

  _diff(node, errors) {
    if (node.kind !== "object") {
      const r = node.read();
      if (r.error) {
        errors.push({ path: node.path, message: r.error });
        return { changed: false };
      }
      if (r.unset) return { changed: false };
      const before = node.original;
      if (node.kind === "json" && isPlainObject(before) && isPlainObject(r.value)) {
        const p = mergeDiff(before, r.value);
        return Object.keys(p).length ? { changed: true, patch: p } : { changed: false };
      }
      if (before === undefined && r.value === null) return { changed: false };
      return deepEqual(before, r.value) ? { changed: false } : { changed: true, patch: r.value };
    }
    const wasPresent = node.original !== null && node.original !== undefined;
    if (node.toggle) {
      if (!node.toggle.checked) return wasPresent ? { changed: true, patch: null } : { changed: false };
      if (!wasPresent) {
        const full = this._full(node, errors, { pruneDefaults: false });
        return { changed: true, patch: full === undefined ? {} : full };
      }
    }
    const patch = {};
    for (const child of node.children) {
      const d = this._diff(child, errors);
      if (d.changed) patch[child.name] = d.patch;
    }
    return Object.keys(patch).length ? { changed: true, patch } : { changed: false };
  }

  /** The whole value a node describes (undefined: leave out). */
  _full(node, errors, { pruneDefaults }) {
    if (node.kind !== "object") {
      const r = node.read();
      if (r.error) {
        errors.push({ path: node.path, message: r.error });
        return undefined;
      }
      if (r.unset) return undefined;
      if (r.value === null && node.nullable && !node.required) return undefined;
      if (pruneDefaults && !node.required && node.def !== undefined && deepEqual(r.value, node.def)) return undefined;
      return r.value;
    }
    if (node.toggle && !node.toggle.checked) return undefined;
    const out = {};
    for (const child of node.children) {
      const v = this._full(child, errors, { pruneDefaults });
      if (v !== undefined) out[child.name] = v;
    }
    if (pruneDefaults && node.path && !node.required && !node.toggle && !Object.keys(out).length) return undefined;
    return out;
  }

  /** {patch, errors}: the merge patch of the user's changes (edit mode). */
  patch() {
    const errors = [];
    const d = this._diff(this.tree, errors);
    return { patch: d.changed ? d.patch : {}, errors };
  }

  /** {document, errors}: a whole new document (create mode), defaults left out. */
  document() {
    const errors = [];
    const doc = this._full(this.tree, errors, { pruneDefaults: true }) || {};
    return { document: doc, errors };
  }

  isDirty() {
    const { patch, errors } = this.mode === "create" ? { patch: this.document().document, errors: [] } : this.patch();
    return errors.length > 0 || Object.keys(patch).length > 0;
  }

  /** How many fields the user changed (leaves of the patch; fields with errors count too). */
  changedCount() {
    if (this.mode === "create") {
      let n = 0;
      for (const node of this.fields.values()) if (node.kind !== "object" && node.element.classList.contains("changed")) n++;
      return n;
    }
    const { patch, errors } = this.patch();
    const paths = new Set(errors.map((e) => e.path));
    const walk = (v, prefix) => {
      if (isPlainObject(v) && Object.keys(v).length) for (const [k, x] of Object.entries(v)) walk(x, prefix ? `${prefix}.${k}` : k);
      else if (prefix) paths.add(prefix);
    };
    walk(patch, "");
    return paths.size;
  }

  _markChanged() {
    for (const node of this.fields.values()) {
      if (node.kind === "object") {
        if (node.toggle && node.fieldEl) {
          const was = this.mode === "edit" && node.original !== null && node.original !== undefined;
          node.fieldEl.classList.toggle("toggled", node.toggle.checked !== was);
        }
        continue;
      }
      const r = node.read();
      let changed;
      if (r.error) changed = true;
      else if (r.unset) changed = false;
      else changed = !deepEqual(this.mode === "create" ? node.start : node.original, r.value) && !(node.original === undefined && r.value === null);
      node.element.classList.toggle("changed", changed);
    }
  }

  // ---- errors -------------------------------------------------------------------------

  /** The form node that shows an error at a dotted path: the deepest field prefixing it. */
  nodeFor(path) {
    const parts = String(path || "").split(".").filter((p) => p !== "");
    for (let i = parts.length; i > 0; i--) {
      const node = this.fields.get(parts.slice(0, i).join("."));
      if (node) return node;
    }
    return null;
  }

  clearErrors() {
    for (const node of this.fields.values()) {
      if (!node.errorEl) continue;
      node.errorEl.hidden = true;
      node.errorEl.textContent = "";
      node.fieldEl.classList.remove("has-error");
      if (node.input) node.input.removeAttribute("aria-invalid");
      if (node.toggle) node.toggle.removeAttribute("aria-invalid");
    }
    this.summaryEl.hidden = true;
    this.summaryEl.replaceChildren();
  }

  /** Show errors [{path, message}] inline and in a summary. */
  showErrors(errors, title = "The document was refused") {
    this.clearErrors();
    if (!errors.length) return;
    const byNode = new Map();
    const items = [];
    for (const e of errors) {
      const path = e.path ?? "";
      const node = this.nodeFor(path);
      const message = e.message ?? e.msg ?? "invalid";
      if (node && node.errorEl) {
        const rest = path.startsWith(node.path) ? path.slice(node.path.length).replace(/^\./, "") : "";
        const line = rest ? `${rest}: ${message}` : message;
        byNode.set(node, [...(byNode.get(node) || []), line]);
      }
      const target = node?.input || node?.toggle || null;
      items.push(h("li", {},
        path ? h("a", { href: "#", class: "err-path", onclick: (ev) => {
          ev.preventDefault();
          if (node) {
            node.fieldEl.scrollIntoView({ block: "center", behavior: "smooth" });
            if (target && !target.disabled) target.focus({ preventScroll: true });
          }
        } }, path) : h("span", { class: "err-path" }, "(document)"),
        ": ", message));
    }
    for (const [node, lines] of byNode) {
      node.errorEl.textContent = lines.join("; ");
      node.errorEl.hidden = false;
      node.fieldEl.classList.add("has-error");
      if (node.input) node.input.setAttribute("aria-invalid", "true");
      if (node.toggle) node.toggle.setAttribute("aria-invalid", "true");
      // A nested object hidden behind its "set" toggle still shows its error.
      let el = node.fieldEl.parentElement;
      while (el) {
        if (el.classList && el.classList.contains("group-body")) el.hidden = false;
        el = el.parentElement;
      }
    }
    this.summaryEl.append(h("strong", {}, `${title}: ${errors.length} problem${errors.length === 1 ? "" : "s"}`), h("ul", {}, items));
    this.summaryEl.hidden = false;
  }

  focusFirstError() {
    for (const node of this.fields.values()) {
      if (node.fieldEl?.classList.contains("has-error")) {
        const t = node.input || node.toggle;
        if (t && !t.disabled) t.focus();
        return;
      }
    }
  }
}
