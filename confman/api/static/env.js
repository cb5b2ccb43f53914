// The environment selector: GET /api/v1/environments, "base" first. The choice is kept in
// localStorage (it outlives the tab, like the operator's habit) and api.js sends it with
// every document route and listing; app.js restarts the event stream with it. Before any
// choice, the server's own environment is picked (the base unless it serves another).

import { api, ApiError, setEnvironment } from "./api.js";
import { h, clear } from "./dom.js";

export const BASE = "base";
const STORAGE_KEY = "confman.environment";

function remembered() {
  try {
    return localStorage.getItem(STORAGE_KEY);
  } catch {
    return null;
  }
}

function remember(name) {
  try {
    localStorage.setItem(STORAGE_KEY, name);
  } catch {
    /* storage unavailable: the choice lasts as long as the page */
  }
}

/** "base", "", null and undefined all name the base (events say "" or null). */
export function isBase(name) {
  return name === null || name === undefined || name === "" || name === BASE;
}

/** An environment's name as shown and sent: "base" for the base. */
export function envName(name) {
  return isBase(name) ? BASE : String(name);
}

export class EnvironmentPicker {
  /**
   * @param {HTMLSelectElement} select the top bar's <select>
   * @param {object} o
   * @param {() => Promise<boolean>} o.mayChange asked first; false puts the previous choice
   *   back (unsaved edits the operator keeps)
   * @param {(name: string) => void} o.onChange after the switch: reload what is shown
   */
  constructor(select, { mayChange, onChange }) {
    this.select = select;
    this.mayChange = mayChange;
    this.onChange = onChange;
    this.environments = []; // [{name, description, documents, ...}], base first
    this.name = BASE;
    this.allowed = null; // the token's environments (null: all)
    select.addEventListener("change", () => this._picked());
  }

  /** Load the list and pick the remembered environment (else the base, or the token's first). */
  async load(me) {
    this.allowed = me && Array.isArray(me.environments) ? me.environments.map(envName) : null;
    let listed = [];
    try {
      const res = await api.environments();
      listed = Array.isArray(res.body) ? res.body : (res.body && res.body.environments) || [];
    } catch (err) {
      if (err instanceof ApiError && err.status === 401) return;
      listed = [];
    }
    const named = listed.filter((e) => e && typeof e.name === "string" && !isBase(e.name));
    named.sort((a, b) => a.name.localeCompare(b.name));
    this.environments = [{ name: BASE, description: "the shared base every environment inherits" }, ...named];
    if (this.allowed) this.environments = this.environments.filter((e) => this.allowed.includes(e.name));
    if (!this.environments.length) this.environments = [{ name: BASE, description: "" }];
    const names = this.names();
    // A limited token may not read the server's own environment: it starts on its first.
    const wanted = remembered() ?? (this.allowed ? null : await this._serversOwn());
    this._set(names.includes(wanted) ? wanted : names[0]);
    this.render();
  }

  /** The environment the server runs in (`confman serve --environment`), which it reads
   * when asked for none: the first choice of an operator who has not picked one yet. */
  async _serversOwn() {
    setEnvironment(null);
    try {
      const res = await api.namespaces();
      const first = Array.isArray(res.body) ? res.body[0] : null;
      return first && "environment" in first ? envName(first.environment) : null;
    } catch {
      return null;
    }
  }

  names() {
    return this.environments.map((e) => e.name);
  }

  get isBase() {
    return this.name === BASE;
  }

  render() {
    clear(this.select, this.environments.map((e) => h("option", {
      value: e.name,
      selected: e.name === this.name,
      title: e.description || null,
    }, e.name, typeof e.documents === "number" && e.name !== BASE ? ` (${e.documents})` : "")));
    this.select.value = this.name;
    this.select.disabled = this.environments.length < 2;
    this.select.title = this.environments.length < 2 ? "no environments besides the base" : "the environment every view reads and writes";
  }

  _set(name) {
    this.name = envName(name);
    setEnvironment(this.name);
    document.documentElement.dataset.environment = this.name;
  }

  async _picked() {
    const next = this.select.value;
    if (next === this.name) return;
    if (!(await this.mayChange())) {
      this.select.value = this.name;
      return;
    }
    this._set(next);
    remember(next);
    this.onChange(next);
  }
}
