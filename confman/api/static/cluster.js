// The cluster view: GET /api/v1/cluster. Every field may be absent or null (without
// Redis the server knows only itself). Each instance serves one environment (null or ""
// = the base); drift compares instances of the same environment only.

import { api, ApiError } from "./api.js";
import { h, clear, timeNode, jsonText, isPlainObject } from "./dom.js";
import { envName, isBase } from "./env.js";

function envBadge(env, testid) {
  const name = envName(env);
  return h("span", { class: ["badge", "env", isBase(name) ? "env-base" : "env-named"], testid }, name);
}

function dash(v) {
  return v === null || v === undefined || v === "" ? h("span", { class: "muted" }, "—") : String(v);
}

function card(label, value, { testid, tone } = {}) {
  return h("div", { class: ["stat", tone && `stat-${tone}`], testid },
    h("div", { class: "stat-label" }, label),
    h("div", { class: "stat-value" }, value));
}

function kvList(obj) {
  return h("dl", { class: "kv" }, Object.entries(obj).map(([k, v]) => [
    h("dt", {}, k),
    h("dd", {}, isPlainObject(v) || Array.isArray(v) ? h("code", { class: "val" }, jsonText(v)) : typeof v === "string" && /^\d{4}-\d\d-\d\dT/.test(v) ? timeNode(v) : dash(v)),
  ]));
}

export class ClusterView {
  constructor(ctx) {
    this.ctx = ctx;
    this.element = h("section", { class: "cluster-view", testid: "cluster-view", "aria-labelledby": "cluster-title" });
    this.alive = true;
    this.timer = null;
  }

  destroy() {
    this.alive = false;
    clearInterval(this.timer);
  }

  async load() {
    clear(this.element, h("div", { class: "placeholder" }, "Loading cluster status…"));
    await this.refresh();
    this.timer = setInterval(() => this.refresh(), 10000);
  }

  async refresh() {
    try {
      const res = await api.cluster();
      if (!this.alive) return;
      this.render(res.body || {});
    } catch (err) {
      if (!this.alive) return;
      if (!(err instanceof ApiError && err.status === 401)) {
        clear(this.element, this._header(), h("div", { class: "placeholder error" }, `Could not load the cluster status: ${err.message}`));
      }
    }
  }

  _header(data) {
    return h("div", { class: "doc-header" }, h("div", { class: "doc-title-row" },
      h("h1", { id: "cluster-title" }, "Cluster", data && data.cluster ? h("span", { class: "muted cluster-name" }, ` ${data.cluster}`) : null),
      h("div", { class: "spacer" }),
      h("span", { class: "muted small" }, "refreshes every 10 s"),
      h("button", { type: "button", class: "btn ghost small", testid: "cluster-refresh", onclick: () => this.refresh() }, "Refresh")));
  }

  render(data) {
    const instances = Array.isArray(data.instances) ? data.instances : [];
    const drift = Array.isArray(data.drift) ? data.drift : [];
    const self = data.instance ?? data.self ?? data.this_instance ?? null;
    const selfId = data.instance_id ?? (isPlainObject(self) ? self.instance_id ?? self.id : typeof self === "string" ? self : null);
    const dbSeq = data.database_seq;
    const lag = typeof dbSeq === "number" && typeof data.applied_seq === "number" ? dbSeq - data.applied_seq : null;
    const selfRow = instances.find((i) => isPlainObject(i) && selfId && (i.instance_id ?? i.id) === selfId);
    const selfEnv = data.environment !== undefined ? data.environment
      : isPlainObject(self) && self.environment !== undefined ? self.environment
      : selfRow ? selfRow.environment : undefined;
    const stats = h("div", { class: "stats" },
      card("This instance", selfId ? h("span", { class: "small-value" }, String(selfId)) : dash(null), { testid: "cluster-instance-id" }),
      selfEnv !== undefined ? card("Environment", envBadge(selfEnv), { testid: "cluster-environment" }) : null,
      card("Redis", data.redis === true ? "yes" : data.redis === false ? "no" : dash(null), { tone: data.redis === false ? null : undefined }),
      card("Leader", data.leader ? h("span", { class: "small-value" }, String(data.leader)) : data.is_leader ? "this instance" : dash(null), { testid: "cluster-leader" }),
      card("Fencing token", dash(data.fencing_token), { testid: "cluster-fencing" }),
      card("Database seq", dash(dbSeq), { testid: "cluster-seq" }),
      card("Applied seq", [dash(data.applied_seq), lag ? h("span", { class: "muted small" }, ` (${lag} behind)`) : null]),
      card("Instances", String(instances.length || (self ? 1 : 0))),
      card("Drift", drift.length ? `${drift.length} finding${drift.length === 1 ? "" : "s"}` : "none", { tone: drift.length ? "bad" : "good", testid: "cluster-drift" }));
    const parts = [this._header(data), stats];
    if (data.redis === false || (!instances.length && (data.leader === null || data.leader === undefined))) {
      parts.push(h("p", { class: "callout info" }, "Without Redis this server knows only itself: no leader election, heartbeats or drift checks. Other processes' changes still arrive through the database's change log."));
    }
    if (drift.length) {
      parts.push(h("h2", {}, "Drift"), h("ul", { class: "drift-list" }, drift.map((d) => h("li", { class: "callout warn" },
        isPlainObject(d) ? [h("strong", {}, dash(d.instance_id)), " ", d.environment !== undefined ? [envBadge(d.environment), " "] : null, h("span", { class: "badge drift-kind" }, dash(d.kind)), " ", dash(d.detail)] : String(d)))));
    }
    if (instances.length) {
      parts.push(h("h2", {}, "Instances"), h("div", { class: "table-wrap" }, h("table", { class: "instances-table" },
        h("thead", {}, h("tr", {}, ["Instance", "Environment", "Host · PID", "Up since", "Beat", "Applied", "Overrides", "State", "Problems"].map((t) => h("th", { scope: "col" }, t)))),
        h("tbody", {}, instances.map((i) => {
          const id = i.instance_id ?? i.id;
          const lag = typeof dbSeq === "number" && typeof i.applied_seq === "number" ? dbSeq - i.applied_seq : null;
          const problems = Array.isArray(i.problems) ? i.problems : [];
          return h("tr", { testid: "cluster-instance" },
            h("td", {}, h("code", {}, dash(id)), i.leader || (id && id === data.leader) ? h("span", { class: "badge leader" }, "leader") : null, id && id === selfId ? h("span", { class: "badge this" }, "this") : null),
            h("td", { class: "nowrap" }, i.environment !== undefined ? envBadge(i.environment, "cluster-instance-environment") : dash(null)),
            h("td", { class: "nowrap" }, i.host || i.pid ? `${i.host ?? "?"} · ${i.pid ?? "?"}` : dash(null)),
            h("td", { class: "nowrap" }, timeNode(i.started_at, { relative: true })),
            h("td", { class: "nowrap" }, timeNode(i.beat_at, { relative: true })),
            h("td", {}, dash(i.applied_seq), lag ? h("span", { class: "muted" }, ` (${lag} behind)`) : null),
            h("td", {}, (() => {
              const ns = isPlainObject(i.namespaces) ? Object.entries(i.namespaces).filter(([, d]) => isPlainObject(d) && d.overridden).map(([n]) => n) : null;
              if (ns === null) return h("span", { class: "muted" }, "—");
              return ns.length ? h("code", { title: "namespaces this instance overrides with env files or variables" }, ns.join(", ")) : h("span", { class: "muted" }, "none");
            })()),
            h("td", {}, i.degraded ? h("span", { class: "badge bad" }, "degraded") : h("span", { class: "badge good" }, "ok")),
            h("td", {}, problems.length ? h("ul", { class: "plain" }, problems.map((p) => h("li", {}, typeof p === "string" ? p : jsonText(p)))) : h("span", { class: "muted" }, "none")));
        })))));
    }
    if (isPlainObject(self)) parts.push(h("h2", {}, "This instance"), kvList(self));
    const known = new Set(["environment", "cluster", "instances", "leader", "fencing_token", "database_seq", "drift", "instance", "self", "this_instance", "instance_id", "redis", "is_leader", "applied_seq"]);
    const extra = Object.fromEntries(Object.entries(data).filter(([k]) => !known.has(k)));
    if (Object.keys(extra).length) parts.push(h("h2", {}, "Other"), kvList(extra));
    parts.push(h("details", { class: "raw" }, h("summary", {}, "Raw response"), h("pre", { class: "json-block" }, JSON.stringify(data, null, 2))));
    clear(this.element, parts);
  }
}
