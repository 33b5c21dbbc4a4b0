// gitcanary UI: one page, hash routes, data from /api/v1, live through one
// EventSource. No framework and no external request; every text goes into the DOM as
// text, never as HTML.
"use strict";

const SVG = "http://www.w3.org/2000/svg";
let session = { actions: false, csrf: null, who: null };
let stream = null;

function h(tag, attrs, ...kids) {
  const el = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "on") for (const [ev, f] of Object.entries(v)) el.addEventListener(ev, f);
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const kid of kids.flat()) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : document.createTextNode(String(kid)));
  }
  return el;
}

// Replaces an element's children, skipping the empty ones as h() does.
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat().filter((k) => k !== null && k !== undefined && k !== false));
}

async function api(path) {
  const r = await fetch("/api/v1/" + path, { credentials: "same-origin" });
  if (r.status === 401) { location.href = "/ui/login"; throw new Error("login needed"); }
  if (!r.ok) throw new Error(path + ": " + r.status + " " + (await r.text()));
  return (r.headers.get("content-type") || "").includes("json") ? r.json() : r.text();
}

async function act(path) {
  const r = await fetch("/api/v1/" + path, {
    method: "POST", credentials: "same-origin", headers: { "x-gitcanary-csrf": session.csrf || "" },
  });
  const body = await r.json().catch(() => ({}));
  return r.ok ? "requested: " + body.requested : "refused: " + (body.error || r.status);
}

const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "-");
const fmtNum = (v, unit) => (v === null || v === undefined ? "no data" : (Math.round(v * 100) / 100) + (unit ? " " + unit : ""));
const fmtSecs = (s) => (s < 1 ? Math.round(s * 1000) + " ms" : (Math.round(s * 100) / 100) + " s");
const short = (rev) => (rev ? String(rev).replace(/@sha1:([0-9a-f]{12})[0-9a-f]*/, "@sha1:$1").replace(/^([0-9a-f]{12})[0-9a-f]{20,}$/, "$1") : "-");

function badge(text) {
  const cls = /^(Succeeded|Initialized|Current|True|ok)$/.test(text) ? "ok"
    : /^(Failed|False|failed)$/.test(text) ? "bad" : "warn";
  return h("span", { class: "badge " + cls, "data-value": text }, text);
}

// ---- charts ---------------------------------------------------------------

function ticks(lo, hi, n) {
  if (hi <= lo) return [lo];
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-9; v += step) out.push(Math.round(v * 1e6) / 1e6);
  return out;
}

// A line chart: series [{points: [[t, v]], cls, fail(t, v)}], thresholds [{v, label}],
// x in seconds from t0, y in `unit`. Hovering shows the nearest point's value.
function chart({ id, title, unit, series, thresholds = [], t0, yMin, yMax, step = false }) {
  const W = 440, H = 190, L = 46, R = 12, T = 10, B = 30;
  const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null && p[1] !== undefined));
  const ts = series.flatMap((s) => s.points.map((p) => p[0] - t0));
  let lo = yMin !== undefined ? yMin : Math.min(...all.map((p) => p[1]), ...thresholds.map((t) => t.v));
  let hi = yMax !== undefined ? yMax : Math.max(...all.map((p) => p[1]), ...thresholds.map((t) => t.v));
  if (!isFinite(lo) || !isFinite(hi)) { lo = 0; hi = 1; }
  if (hi === lo) { hi += 1; lo = Math.max(0, lo - 1); }
  const pad = (hi - lo) * 0.08;
  if (yMin === undefined) lo -= pad;
  if (yMax === undefined) hi += pad;
  const tMax = Math.max(10, ...ts);
  const x = (t) => L + ((t - 0) / tMax) * (W - L - R);
  const y = (v) => T + (1 - (v - lo) / (hi - lo)) * (H - T - B);
  const svg = h("svg:svg", { class: "plot", id, viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  for (const v of ticks(lo, hi, 4)) {
    svg.append(h("svg:line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }));
    svg.append(h("svg:text", { x: L - 4, y: y(v) + 3, "text-anchor": "end" }, fmtNum(v, "")));
  }
  for (const t of ticks(0, tMax, 5)) {
    svg.append(h("svg:text", { x: x(t), y: H - B + 14, "text-anchor": "middle" }, t + "s"));
  }
  svg.append(h("svg:line", { class: "axis", x1: L, x2: L, y1: T, y2: H - B }));
  svg.append(h("svg:line", { class: "axis", x1: L, x2: W - R, y1: H - B, y2: H - B }));
  svg.append(h("svg:text", { x: 4, y: T + 2, transform: `rotate(-90 4 ${T + 2})`, "text-anchor": "end", dy: "0.7em" }, unit || "value"));
  svg.append(h("svg:text", { x: W - R, y: H - 2, "text-anchor": "end" }, "time since analysis start (s)"));
  for (const th of thresholds) {
    svg.append(h("svg:line", { class: "threshold", x1: L, x2: W - R, y1: y(th.v), y2: y(th.v) }));
    svg.append(h("svg:text", { class: "threshold-label", x: W - R - 2, y: y(th.v) - 3, "text-anchor": "end" }, th.label));
  }
  const dots = [];
  for (const s of series) {
    let d = "", prev = null;
    for (const [t, v] of s.points) {
      if (v === null || v === undefined) { prev = null; continue; }
      const px = x(t - t0), py = y(v);
      if (prev && step) d += `H${px.toFixed(1)}V${py.toFixed(1)}`;
      else d += (prev ? "L" : "M") + px.toFixed(1) + " " + py.toFixed(1);
      prev = [px, py];
    }
    if (d) svg.append(h("svg:path", { class: "line " + (s.cls || ""), d }));
    if (s.cls === "last") continue;
    for (const [t, v] of s.points) {
      const failed = s.fail ? s.fail(t, v) : false;
      const py = v === null || v === undefined ? H - B : y(v);
      const label = `${Math.round(t - t0)}s: ${fmtNum(v, unit)}${failed ? " (failed check)" : ""}`;
      const c = h("svg:circle", { class: "pt" + (failed ? " fail" : ""), cx: x(t - t0), cy: py, r: 3.2, "data-t": t, "data-v": v },
        h("svg:title", {}, label));
      dots.push([x(t - t0), py, label]);
      svg.append(c);
    }
  }
  const cursor = h("svg:line", { class: "cursor", x1: 0, x2: 0, y1: T, y2: H - B, visibility: "hidden" });
  svg.append(cursor);
  const tip = document.getElementById("tip");
  svg.addEventListener("mousemove", (e) => {
    if (!dots.length) return;
    const box = svg.getBoundingClientRect(), mx = ((e.clientX - box.left) / box.width) * W;
    const near = dots.reduce((a, b) => (Math.abs(b[0] - mx) < Math.abs(a[0] - mx) ? b : a));
    cursor.setAttribute("x1", near[0]); cursor.setAttribute("x2", near[0]); cursor.setAttribute("visibility", "visible");
    tip.textContent = near[2]; tip.hidden = false;
    tip.style.left = e.clientX + 12 + "px"; tip.style.top = e.clientY - 10 + "px";
  });
  svg.addEventListener("mouseleave", () => { cursor.setAttribute("visibility", "hidden"); tip.hidden = true; });
  return h("div", { class: "chart" }, h("h3", {}, title), svg);
}

function sparkline(values) {
  const W = 110, H = 22;
  if (!values || !values.length) return h("span", { class: "muted" }, "-");
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  const d = values.map((v, i) => (i ? "L" : "M") + ((i / Math.max(1, values.length - 1)) * (W - 2) + 1).toFixed(1) + " " + (H - 2 - ((v - lo) / span) * (H - 4)).toFixed(1)).join("");
  return h("svg:svg", { class: "spark", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": "success rate " + values[values.length - 1] + "%" },
    h("svg:path", { class: "line", d }), h("svg:title", {}, "success rate, last " + values[values.length - 1] + "%"));
}

// Charts of one analysis (its weights and metric samples), with the previous
// analysis drawn faintly behind when given.
function analysisCharts(current, last, metricsSpec, maxWeight) {
  if (!current) return h("p", { class: "muted" }, "No analysis recorded yet.");
  const t0 = current.start, lt0 = last ? last.start : 0;
  const rebase = (pts, from) => pts.map(([t, v]) => [t - from + t0, v]);
  const out = [chart({
    id: "weight-chart", title: "Canary weight", unit: "%", t0, yMin: 0, yMax: Math.max(maxWeight || 0, 10, ...current.weights.map((w) => w[1])), step: true,
    series: [
      ...(last ? [{ points: rebase(last.weights, lt0), cls: "last" }] : []),
      { points: current.weights, cls: "weight" },
    ],
  })];
  const names = new Set([...(metricsSpec || []).map((m) => m.name), ...current.metrics.map((m) => m.name)]);
  for (const name of names) {
    const s = current.metrics.find((m) => m.name === name) || { points: [], unit: "" };
    const spec = (metricsSpec || []).find((m) => m.name === name) || {};
    const min = s.min !== undefined && s.min !== null ? s.min : spec.min, max = s.max !== undefined && s.max !== null ? s.max : spec.max;
    const unit = s.unit || spec.unit || "";
    const prev = last && last.metrics.find((m) => m.name === name);
    const thresholds = [];
    if (min !== null && min !== undefined) thresholds.push({ v: min, label: "min " + fmtNum(min, unit) });
    if (max !== null && max !== undefined) thresholds.push({ v: max, label: "max " + fmtNum(max, unit) });
    // The engine lists the checks that failed (no data, a query error, out of range);
    // a series without that list (none failed, or from a history note) is judged by
    // its thresholds: no data or a value out of range.
    const failedAt = new Set(s.failed || []);
    const outside = (v) => v === null || v === undefined || (min !== null && min !== undefined && v < min) || (max !== null && max !== undefined && v > max);
    const fail = (t, v) => (s.failed ? failedAt.has(t) : outside(v));
    out.push(chart({
      id: "metric-" + name, title: name + (spec.template ? " (" + spec.template + ")" : ""), unit, t0, thresholds,
      series: [...(prev ? [{ points: rebase(prev.points, lt0), cls: "last" }] : []), { points: s.points, fail }],
    }));
  }
  return h("div", { class: "charts" }, out);
}

// ---- pages ----------------------------------------------------------------

async function overview(main) {
  const [sources, objects, canaries, images] = await Promise.all([api("sources"), api("objects"), api("canaries"), api("images")]);
  const s = sources[0] || {};
  const kinds = {};
  for (const o of objects) kinds[o.kind] = (kinds[o.kind] || 0) + 1;
  const notReady = objects.filter((o) => o.health !== "Current");
  fill(main, 
    h("h1", {}, "Overview"),
    h("div", { class: "cards" },
      h("div", { class: "card", id: "source" }, h("h2", {}, "Source ", badge(s.ready ? "True" : (s.lastAttemptAt ? "False" : "Unknown"))),
        h("dl", {},
          h("dt", {}, "URL"), h("dd", { class: "mono" }, s.url || "-"),
          h("dt", {}, "Branch"), h("dd", {}, s.branch || "-"),
          h("dt", {}, "Fetched"), h("dd", { class: "mono" }, short(s.fetchedRevision)),
          h("dt", {}, "Applied"), h("dd", { class: "mono" }, short(s.appliedRevision)),
          h("dt", {}, "Last sync"), h("dd", {}, s.appliedAt || s.lastAttemptAt || "-"),
          h("dt", {}, "Sync took"), h("dd", { id: "sync-duration" }, s.lastSyncDuration !== null && s.lastSyncDuration !== undefined ? fmtSecs(s.lastSyncDuration) : "-"),
          h("dt", {}, "Suspended"), h("dd", {}, s.suspended ? "yes" : "no"),
          h("dt", {}, "Message"), h("dd", {}, s.message || ""),
          s.lastError ? [h("dt", {}, "Last error"), h("dd", { class: "error mono" }, s.lastError)] : null),
        session.actions ? h("div", { class: "actions" }, actionButton("sources/reconcile", "Reconcile now")) : null),
      h("div", { class: "card", id: "counts" }, h("h2", {}, "Objects"),
        h("dl", {}, Object.entries(kinds).sort().map(([k, n]) => [h("dt", {}, k), h("dd", {}, n)])),
        notReady.length ? [h("h2", {}, "Not ready"), h("ul", {}, notReady.map((o) => h("li", {}, `${o.kind} ${o.namespace}/${o.name}: `, badge(o.health), " ", o.healthMessage)))] : null)),
    h("h2", {}, "Canaries"),
    canaries.length ? h("table", { id: "canaries" },
      h("tr", {}, ["Canary", "Phase", "Weight", "Failed checks", "Success rate", "Message"].map((c) => h("th", {}, c))),
      canaries.map((c) => h("tr", { class: "click", "data-canary": c.namespace + "/" + c.name, on: { click: () => (location.hash = `#/canary/${c.namespace}/${c.name}`) } },
        h("td", {}, h("a", { href: `#/canary/${c.namespace}/${c.name}` }, `${c.namespace}/${c.name}`)),
        h("td", {}, badge(c.status)), h("td", {}, c.weight + "%"), h("td", {}, c.failedChecks),
        h("td", {}, sparkline(c.successRate)), h("td", {}, c.message)))) : h("p", { class: "muted" }, "No canaries."),
    h("h2", {}, "Images"),
    (images.rows || []).length ? h("table", { id: "images" },
      h("tr", {}, ["Policy", "Image", "Rule", "Current", "Latest", "Rejected", "Message"].map((c) => h("th", {}, c))),
      images.rows.map((r) => h("tr", { "data-policy": r.policy }, h("td", {}, r.policy), h("td", { class: "mono" }, r.image), h("td", {}, r.rule),
        h("td", {}, r.current), h("td", {}, r.latest || "-"), h("td", { class: "rejected" }, (r.rejected || []).join(", ") || "-"), h("td", {}, r.message)))) : h("p", { class: "muted" }, "No image automation."),
    images.error ? h("p", { class: "error" }, images.error) : null,
  );
}

function actionButton(path, label) {
  const out = h("span", { class: "muted" });
  return h("span", {}, h("button", { type: "button", "data-action": path, on: { click: async () => { out.textContent = await act(path); } } }, label), " ", out);
}

async function canaryPage(main, ns, name) {
  const c = await api(`canaries/${encodeURIComponent(ns)}/${encodeURIComponent(name)}`);
  const sp = c.spec || {};
  const samples = c.samples || {};
  const steps = sp.stepWeights && sp.stepWeights.length ? sp.stepWeights.join(", ") : `${sp.stepWeight} up to ${sp.maxWeight}`;
  fill(main, 
    h("h1", {}, `Canary ${ns}/${name} `),
    h("div", { class: "cards" },
      h("div", { class: "card" }, h("dl", {},
        h("dt", {}, "Phase"), h("dd", {}, h("span", { id: "phase", "data-phase": c.status }, badge(c.status)), c.suspended ? " (suspended)" : ""),
        h("dt", {}, "Weight"), h("dd", { id: "weight", "data-weight": c.weight }, c.weight + "%"),
        h("dt", {}, "Failed checks"), h("dd", { id: "failed" }, `${c.failedChecks} of ${sp.threshold}`),
        h("dt", {}, "Message"), h("dd", {}, c.message))),
      h("div", { class: "card", id: "spec" }, h("dl", {},
        h("dt", {}, "Target"), h("dd", {}, `Deployment/${sp.target}`),
        h("dt", {}, "Interval"), h("dd", {}, sp.interval),
        h("dt", {}, "Threshold"), h("dd", {}, sp.threshold),
        h("dt", {}, sp.iterations ? "Iterations" : "Step weights"), h("dd", {}, sp.iterations || steps),
        h("dt", {}, "Max weight"), h("dd", {}, sp.maxWeight),
        sp.error ? [h("dt", {}, "Spec error"), h("dd", { class: "error" }, sp.error)] : null))),
    session.actions ? h("div", { class: "actions" }, ["promote", "abort", "retry", c.suspended ? "resume" : "suspend"].map((a) => actionButton(`canaries/${ns}/${name}/${a}`, a))) : null,
    h("h2", {}, "Analysis", samples.current ? h("span", { class: "muted" }, ` of ${short(samples.current.revision)} since ${fmtTime(samples.current.start)}`) : null,
      samples.last ? h("span", { class: "muted" }, " (dashed: the analysis before)") : null),
    analysisCharts(samples.current, samples.last, sp.metrics, sp.maxWeight),
    h("h2", {}, "Webhooks"),
    (sp.webhooks || []).length ? h("table", { id: "webhooks" }, h("tr", {}, ["Name", "Type", "URL", "Result"].map((x) => h("th", {}, x))),
      sp.webhooks.map((w) => h("tr", {}, h("td", {}, w.name), h("td", {}, w.type), h("td", { class: "mono" }, w.url), h("td", {}, badge(w.result), w.message ? " " + w.message : "")))) : h("p", { class: "muted" }, "None."),
    h("h2", {}, "Events"),
    h("ul", { class: "events", id: "events" }, (c.events || []).slice().reverse().map((e) => h("li", { class: e.severity }, h("time", {}, fmtTime(e.at)), e.message))),
  );
}

async function objectsPage(main) {
  const objects = await api("objects");
  const view = h("pre", { class: "yaml", id: "yaml", hidden: true });
  const byNs = {};
  for (const o of objects) (byNs[o.namespace || "(cluster)"] = byNs[o.namespace || "(cluster)"] || []).push(o);
  fill(main, h("h1", {}, "Objects"), view,
    ...Object.keys(byNs).sort().map((ns) => [h("h2", {}, ns), h("table", {},
      h("tr", {}, ["Kind", "Name", "Health", "Revision", "Source"].map((x) => h("th", {}, x))),
      byNs[ns].sort((a, b) => (a.kind + a.name).localeCompare(b.kind + b.name)).map((o) => h("tr", {
        class: "click", on: { click: async () => {
          const group = o.apiVersion.includes("/") ? o.apiVersion.split("/")[0] : "core";
          view.textContent = await api(`objects/${group}/${o.kind}/${o.namespace || "_"}/${o.name}`).catch((e) => e.message);
          view.hidden = false; view.scrollIntoView({ block: "nearest" });
        } },
      }, h("td", {}, o.kind), h("td", {}, o.name), h("td", {}, badge(o.health), " ", h("span", { class: "muted" }, o.healthMessage)),
        h("td", { class: "mono" }, String(o.revision).slice(0, 12)), h("td", { class: "mono" }, o.source))))]).flat());
}

async function historyPage(main) {
  const notes = await api("history");
  fill(main, h("h1", {}, "History"),
    notes.length ? h("div", { id: "history" }, notes.map((n) => h("div", { class: "card" },
      h("h2", {}, `${n.canary || ""} `, badge(n.outcome || "unknown"), ` ${n.from || "?"} → ${n.to || "?"}`),
      h("dl", {}, h("dt", {}, "Commit"), h("dd", { class: "mono" }, n.commit),
        h("dt", {}, "Duration"), h("dd", {}, n.durationSeconds !== undefined ? Math.round(n.durationSeconds) + " s" : "-"),
        h("dt", {}, "Ended"), h("dd", {}, n.end ? new Date(n.end * 1000).toLocaleString() : "-")),
      n.samples ? analysisCharts(n.samples, null, null, null) : null)))
      : h("p", { class: "muted", id: "history" }, "No rollouts recorded in Git yet (refs/notes/gitcanary)."));
}

// ---- routing and live updates -----------------------------------------------

const AREAS = { overview: ["sources", "objects", "canaries", "images"], canary: ["canaries"], objects: ["objects"], history: ["sources"] };
let current = { page: "overview", render: null };

async function route() {
  const main = document.getElementById("main");
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  let page = "overview", render = () => overview(main);
  if (parts[0] === "canary" && parts.length >= 3) { page = "canary"; render = () => canaryPage(main, parts[1], parts[2]); }
  else if (parts[0] === "objects") { page = "objects"; render = () => objectsPage(main); }
  else if (parts[0] === "history") { page = "history"; render = () => historyPage(main); }
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === page || (page === "canary" && a.dataset.nav === "overview"));
  current = { page, render };
  await refresh();
}

let busy = false, again = false;
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  try { await current.render(); document.body.dataset.loaded = current.page; }
  catch (e) { fill(document.getElementById("main"), h("p", { class: "error" }, e.message)); }
  finally { busy = false; if (again) { again = false; refresh(); } }
}

function live() {
  stream = new EventSource("/api/v1/events");
  const mark = document.getElementById("live");
  stream.addEventListener("hello", () => { mark.textContent = "live"; mark.classList.add("on"); });
  stream.addEventListener("change", (e) => {
    const areas = JSON.parse(e.data).areas || [];
    if (areas.some((a) => AREAS[current.page].includes(a))) refresh();
  });
  stream.onerror = () => { mark.textContent = "reconnecting"; mark.classList.remove("on"); };
}

async function start() {
  session = await api("session").catch(() => session);
  if (session.who) document.getElementById("who").textContent = session.who;
  document.getElementById("logout").hidden = !session.login;
  window.addEventListener("hashchange", route);
  await route();
  live();
}

start();
