// stormeye's on-call page: the incident list, one incident (charts, why grouped, timeline,
// actions) and the metric search. Plain JavaScript, no build step; charts by the vendored uPlot.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = $("#main");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
const pad = (n) => String(n).padStart(2, "0");
function when(t) {
  if (t == null) return "";
  const d = new Date(t * 1000);
  return `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
}
function ago(s) {
  s = Math.round(s);
  if (Math.abs(s) < 60) return `${s}s`;
  if (Math.abs(s) < 3600) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}
const prio = (p) => `<span class="prio p${p}">P${p}</span>`;
const statusOf = (inc) => (inc.status === "open" && inc.acknowledged ? "acknowledged" : inc.status);
const statusBadge = (inc) => `<span class="status ${statusOf(inc)}" title="${inc.acknowledged ? esc(`by ${inc.acknowledged.by} at ${when(inc.acknowledged.at)} UTC`) : ""}">${statusOf(inc)}</span>`;

// -- talking to the API -------------------------------------------------------------------
// The token lives in this tab's session storage (gone when the tab closes), sent as a bearer token.
const TOKEN_KEY = "stormeye-token";
function token() { return sessionStorage.getItem(TOKEN_KEY) || ""; }
let auth = { auth_required: false, valid: true, actor: null };
class NeedLogin extends Error {}
async function api(path, opts = {}) {
  const headers = { accept: "application/json" };
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  if (token()) headers.authorization = `Bearer ${token()}`;
  const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const detail = typeof data.detail === "string" ? data.detail : JSON.stringify(data.detail || r.statusText);
    if (r.status === 401) { // the token is missing or no longer valid: log in, then the same view
      sessionStorage.removeItem(TOKEN_KEY);
      auth = { auth_required: true, valid: false, actor: null };
      showWho();
      showLogin(`${detail}`);
      throw new NeedLogin(`401: ${detail}`);
    }
    throw new Error(`${r.status}: ${detail}`);
  }
  return data;
}
async function checkAuth(candidate) {
  const headers = { accept: "application/json" };
  if (candidate) headers.authorization = `Bearer ${candidate}`;
  const r = await fetch("/api/v1/page/auth", { headers });
  const data = await r.json().catch(() => ({}));
  if (r.status === 401) return { auth_required: true, valid: false, actor: null, problem: data.detail || "the token is not valid" };
  if (!r.ok) throw new Error(`${r.status}: ${typeof data.detail === "string" ? data.detail : r.statusText}`);
  return data;
}
let flashTimer = 0;
function flash(text, error = false) {
  const el = $("#flash");
  el.textContent = text;
  el.className = error ? "error" : "";
  el.hidden = false;
  clearTimeout(flashTimer);
  flashTimer = setTimeout(() => { el.hidden = true; }, error ? 8000 : 3000);
}
const fail = (e) => { if (!(e instanceof NeedLogin)) flash(e.message, true); };

// -- logging in: a form, the token checked by the server, the view drawn at once -----------------
function showLogin(problem = "") {
  clearView();
  $("#nav-list").classList.remove("active");
  $("#nav-search").classList.remove("active");
  main.innerHTML = `
  <div class="card login" id="login">
    <h1>Log in</h1>
    <p>This stormeye server wants an API token (<span class="mono">STORMEYE_API_TOKEN</span> or one of
      <span class="mono">STORMEYE_API_TOKENS</span>). It is kept in this tab until you close it or log out,
      and sent as <span class="mono">Authorization: Bearer …</span>.</p>
    <form id="login-form" autocomplete="off">
      <label>API token <input type="password" name="token" id="login-token" required autofocus></label>
      <button class="act primary" type="submit" id="login-submit">Log in</button>
    </form>
    <p class="error" id="login-problem"${problem ? "" : " hidden"}>${esc(problem)}</p>
    <p class="meta">After logging in you land on ${esc(describe(location.hash))}.</p>
  </div>`;
  $("#login-token").focus();
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const t = $("#login-token").value.trim();
    let got;
    try { got = await checkAuth(t); } catch (err) { return showProblem(err.message); }
    if (!got.valid) return showProblem(`${got.problem || "the token is not valid"}: check it and try again`);
    sessionStorage.setItem(TOKEN_KEY, t);
    auth = got;
    showWho();
    route(); // the view the address names, now
  });
}
function showProblem(text) { const p = $("#login-problem"); p.textContent = text; p.hidden = false; }
function describe(hash) {
  const h = hash.slice(1) || "/";
  if (h.startsWith("/incident/") || h.startsWith("/incidents/")) return `incident ${decodeURIComponent(h.split("/")[2] || "")}`;
  if (h.startsWith("/search")) return "the metric search";
  return "the incident list";
}
function showWho() {
  const who = $("#who"), btn = $("#token");
  if (!auth.auth_required) { who.textContent = ""; btn.hidden = true; return; }
  btn.hidden = false;
  who.textContent = auth.valid && token() ? `logged in as ${auth.actor}` : "not logged in";
  btn.textContent = auth.valid && token() ? "log out" : "log in";
}
$("#token").addEventListener("click", () => {
  if (token()) {
    sessionStorage.removeItem(TOKEN_KEY);
    auth = { ...auth, valid: false, actor: null };
    showWho();
  }
  showLogin();
});

// -- routing ---------------------------------------------------------------------------------
let refreshTimer = 0;
let charts = [];
function clearView() {
  clearInterval(refreshTimer);
  charts.forEach((c) => c.destroy());
  charts = [];
}
function route() {
  clearView();
  if (auth.auth_required && !(auth.valid && token())) return showLogin();
  const h = location.hash.slice(1) || "/";
  $("#nav-list").classList.toggle("active", !h.startsWith("/search"));
  $("#nav-search").classList.toggle("active", h.startsWith("/search"));
  if (h.startsWith("/incident/")) return showIncident(decodeURIComponent(h.slice(10)));
  // links that notifications sent before 0.1.1 carried: #/incidents/ID
  if (h.startsWith("/incidents/")) return showIncident(decodeURIComponent(h.slice(11)));
  if (h.startsWith("/search")) return showSearch(new URLSearchParams(h.split("?")[1] || "").get("metric") || "");
  return showList(new URLSearchParams(h.split("?")[1] || ""));
}
window.addEventListener("hashchange", route);

// -- the incident list ------------------------------------------------------------------------
const STATUSES = ["open", "acknowledged", "resolved", "merged", "all"];
const listState = { status: "open", prios: [], match: "", since: "", until: "", live: true };
function toEpoch(v) { return v ? Date.parse(v + "Z") / 1000 : null; }
// the filters live in the address (#/?status=resolved&priority=1&match=region%3D%22eu%22): a link shares them
function filtersFrom(q) {
  const status = q.get("status");
  listState.status = STATUSES.includes(status) ? status : "open";
  listState.prios = (q.get("priority") || "").split(",").map(Number).filter((p) => p >= 1 && p <= 5);
  listState.match = q.get("match") || "";
  listState.since = q.get("from") || "";
  listState.until = q.get("to") || "";
  listState.live = q.get("live") !== "0";
}
function filtersHash() {
  const q = new URLSearchParams();
  if (listState.status !== "open") q.set("status", listState.status);
  if (listState.prios.length) q.set("priority", listState.prios.join(","));
  if (listState.match) q.set("match", listState.match);
  if (listState.since) q.set("from", listState.since);
  if (listState.until) q.set("to", listState.until);
  if (!listState.live) q.set("live", "0");
  const text = q.toString();
  return text ? `#/?${text}` : "#/";
}
function keepFilters() { // in the address without drawing the view again (no hashchange)
  const h = filtersHash();
  if (location.hash !== h && !(h === "#/" && location.hash === "")) history.replaceState(null, "", h);
}
function showList(q = new URLSearchParams()) {
  filtersFrom(q);
  main.innerHTML = `
  <div class="card"><form class="filters" id="filters">
    <label>status <select name="status">
      ${["open", "acknowledged", "recognised", "resolved", "merged", "all"].map((s) => `<option${s === listState.status ? " selected" : ""}>${s}</option>`).join("")}
    </select></label>
    <label>priority <span class="prios">${[1, 2, 3, 4, 5].map((p) => `<label><input type="checkbox" name="p" value="${p}"${listState.prios.includes(p) ? " checked" : ""}>P${p}</label>`).join("")}</span></label>
    <label>label matchers <input type="text" name="match" placeholder='service="checkout",region=~"us-.*"' value="${esc(listState.match)}"></label>
    <label>from (UTC) <input type="datetime-local" name="since" value="${esc(listState.since)}"></label>
    <label>to (UTC) <input type="datetime-local" name="until" value="${esc(listState.until)}"></label>
    <label>&nbsp;<span><input type="checkbox" name="live"${listState.live ? " checked" : ""}> live</span></label>
    <button class="act primary" type="submit">apply</button>
    <span class="count" id="count"></span>
  </form></div>
  <table class="list" id="incidents"><thead><tr><th>prio</th><th>title</th><th>status</th><th>size</th><th>start (UTC)</th><th>root</th></tr></thead><tbody></tbody></table>`;
  const form = $("#filters");
  form.addEventListener("submit", (e) => { e.preventDefault(); readFilters(form); keepFilters(); loadList(); });
  form.addEventListener("change", () => { readFilters(form); keepFilters(); loadList(); });
  $("#incidents").addEventListener("click", (e) => {
    const tr = e.target.closest("tr.row");
    if (tr) location.hash = `#/incident/${encodeURIComponent(tr.dataset.id)}`;
  });
  loadList();
  refreshTimer = setInterval(() => { if (listState.live && !document.hidden) loadList(); }, 10000);
}
function readFilters(form) {
  const f = new FormData(form);
  listState.status = f.get("status");
  listState.prios = f.getAll("p").map(Number);
  listState.match = f.get("match").trim();
  listState.since = f.get("since");
  listState.until = f.get("until");
  listState.live = f.get("live") === "on";
}
async function loadList() {
  const q = new URLSearchParams({ status: listState.status, limit: "1000" });
  if (listState.prios.length) q.set("priority", listState.prios.join(","));
  if (listState.match) q.set("match", listState.match);
  if (listState.since) q.set("since", toEpoch(listState.since));
  if (listState.until) q.set("until", toEpoch(listState.until));
  let data;
  try { data = await api(`/api/v1/page/incidents?${q}`); } catch (e) { fail(e); return; }
  const body = $("#incidents tbody");
  if (!body) return; // the view changed meanwhile
  renderList(body, data.incidents, data.empty);
}
const filtered = () => listState.prios.length || listState.match || listState.since || listState.until;
// an empty list says why: what the database holds, which filters hide it, and offers the way out
function whyEmpty(e) {
  if (!e) return "no incidents match";
  const held = Object.entries(e.counts || {}).filter(([, n]) => n > 0).map(([k, n]) => `${n} ${k}`).join(", ");
  const parts = [];
  if (!e.total) {
    parts.push(`<b>No incidents yet</b> in the database this server uses (<span class="mono">${esc(e.database)}</span>).
      An incident opens when anomalies or alerts with enough evidence arrive: send metrics (remote write, Graphite,
      <span class="mono">POST /api/v1/points</span>) or alerts, and it appears here.`);
    if (e.demo) parts.push(`<span class="demo-hint"><span class="mono">stormeye demo</span> keeps its incidents in a database of its own,
      <span class="mono">${esc(e.demo.file)}</span>. To look at them: <span class="mono">${esc(e.demo.serve)}</span>
      (the demo's series are not kept: its incidents show members and evidence, without charts).</span>`);
    return parts.join("<br>");
  }
  const what = `${listState.status === "all" ? "" : `${esc(listState.status)} `}incidents${filtered() ? " with these filters" : ""}`;
  parts.push(`<b>No ${what}.</b> The database holds ${esc(held)}.`);
  if (listState.status !== "all") parts.push(`<button class="act" type="button" id="show-all">show all</button>`);
  if (filtered()) parts.push(`<button class="act" type="button" id="clear-filters">clear filters</button>`);
  return parts.join(" ");
}
function renderList(body, rows, empty) {
  const t0 = performance.now();
  body.innerHTML = rows.length ? rows.map((i) => `<tr class="row ${statusOf(i)}" data-id="${esc(i.id)}">
      <td>${prio(i.priority)}</td><td>${esc(i.title)}</td><td>${statusBadge(i)}</td>
      <td class="num">${i.size}</td><td class="when">${when(i.start)}</td>
      <td class="root">${esc(i.root || "")}${i.root_entity ? `<br><span class="meta">${esc(i.root_entity)}</span>` : ""}</td></tr>`).join("")
    : `<tr><td colspan="6" class="empty" id="empty">${whyEmpty(empty)}</td></tr>`;
  const all = $("#show-all"), clear = $("#clear-filters");
  if (all) all.addEventListener("click", () => { listState.status = "all"; location.hash = filtersHash(); });
  if (clear) clear.addEventListener("click", () => { location.hash = listState.status === "open" ? "#/" : `#/?status=${listState.status}`; });
  $("#count").textContent = `${rows.length} incident${rows.length === 1 ? "" : "s"} · refreshed ${when(Date.now() / 1000).slice(11)} UTC`;
  window.stormeyeTimings = { ...(window.stormeyeTimings || {}), listRenderMs: performance.now() - t0, listRows: rows.length };
  document.body.dataset.listRows = String(rows.length);
}

// -- one incident ---------------------------------------------------------------------------------
async function showIncident(id) {
  main.innerHTML = `<div class="empty">loading ${esc(id)}…</div>`;
  let inc, series, graph;
  try {
    [inc, series, graph] = await Promise.all([
      api(`/api/v1/page/incidents/${encodeURIComponent(id)}`),
      api(`/api/v1/incidents/${encodeURIComponent(id)}/series`).catch(() => ({ series: {}, step: 60 })),
      api(`/api/v1/incidents/${encodeURIComponent(id)}/graph`),
    ]);
  } catch (e) { if (!(e instanceof NeedLogin)) main.innerHTML = `<div class="card empty">${esc(e.message)}</div>`; return; }
  const t0 = performance.now();
  renderIncident(inc, series, graph);
  window.stormeyeTimings = { ...(window.stormeyeTimings || {}), incidentRenderMs: performance.now() - t0, incidentMembers: inc.members.length };
  document.body.dataset.incident = inc.id;
}

function renderIncident(inc, series, graph) {
  const open = inc.status === "open" || inc.status === "recognised";
  const metrics = [];
  const byMetric = new Map();
  for (const m of inc.members) {
    if (!byMetric.has(m.metric)) { byMetric.set(m.metric, []); metrics.push(m.metric); }
    byMetric.get(m.metric).push(m);
  }
  const first = inc.members.length ? inc.members[0].start : inc.start;
  const shared = Object.entries(inc.shared || {}).map(([k, v]) => `<span class="chip">${esc(k)}=${esc(v)}</span>`).join("");
  const common = (inc.common || []).filter((c) => !(c.pair.split("=")[0] in (inc.shared || {})))
    .map((c) => `<span class="chip weak">${esc(c.pair)} · ${c.members}/${metrics.length}</span>`).join("");
  main.innerHTML = `
  <div class="card">
    <div class="head">${prio(inc.priority)}<h1>${esc(inc.title)}</h1>${statusBadge(inc)}</div>
    <div class="meta">${esc(inc.id)} · ${metrics.length} metrics, ${inc.members.length} anomalies · ${when(inc.start)} → ${when(inc.end)} UTC
      ${inc.acknowledged ? ` · acknowledged by <b>${esc(inc.acknowledged.by)}</b> at ${when(inc.acknowledged.at)}` : ""}
      ${inc.merged_into ? ` · merged into <a href="#/incident/${esc(inc.merged_into)}">${esc(inc.merged_into)}</a>` : ""}</div>
    ${inc.profile_detail ? `<p class="recognised">${inc.status === "recognised" ? "A known routine: pages nobody." : "Matched a known routine."}
      noise profile <span class="mono">${esc(inc.profile_detail.id)}</span>, learnt from
      <a href="#/incident/${esc(inc.profile_detail.incident)}">${esc(inc.profile_detail.incident)}</a> (marked noise by
      <b>${esc(inc.profile_detail.by)}</b> at ${when(inc.profile_detail.at)} UTC; ${esc(inc.profile_detail.scope)})${inc.profile_detail.forgotten_at ? " · forgotten since" : ""}</p>` : ""}
    <p>root metric <span class="mono"><a href="#/search?metric=${encodeURIComponent(inc.root || "")}">${esc(inc.root || "—")}</a></span>
      · root entity <b>${esc(inc.root_entity || "—")}</b></p>
    <div class="chips">${shared || '<span class="meta">no property shared by every member</span>'} ${common}</div>
    ${inc.status === "merged"
      ? `<div class="actions meta" id="no-actions">merged into <a href="#/incident/${esc(inc.merged_into)}">${esc(inc.merged_into)}</a>: act on that one</div>`
      : `<div class="actions">
      ${open ? `<button class="act primary" id="ack" ${inc.acknowledged ? "disabled" : ""}>Acknowledge</button>
      <button class="act" id="resolve">Resolve</button>` : ""}
      ${inc.status === "recognised" ? '<button class="act primary" id="real">This one is real</button>' : ""}
      <button class="act" id="noise" ${inc.profile_detail && inc.status === "recognised" ? "disabled" : ""} title="routine, expected, nothing to do: learn it, and keep its repeats quiet">Not a problem</button>
      ${open ? `<span class="meta">merge into this one:</span><input type="text" id="merge-from" placeholder="inc-…" size="18">
      <button class="act" id="merge">Merge</button>
      <button class="act" id="split" title="tick members below first">Split ticked members off</button>`
        : `<span class="meta" id="no-actions">${esc(inc.status)}: nothing more to act on</span>`}
    </div>`}
  </div>
  <div class="grid2">
    <div class="card"><h2>Why grouped</h2>
      <div class="legend"><span><i style="background:var(--names)"></i>names</span><span><i style="background:var(--shape)"></i>shape</span>
        <span><i style="background:var(--time)"></i>time</span><span><i style="background:var(--topology)"></i>topology</span>
        <span>left → right: onset order · node: red rose, blue dropped, size = peak · ringed: root · dashed: no shared entity</span></div>
      <div id="graph"></div></div>
    <div class="card"><h2>Timeline</h2><ul class="timeline" id="timeline">${timeline(inc.timeline)}</ul></div>
  </div>
  <div class="card"><h2>Members by onset</h2>
    <div class="legend"><span><i class="span"></i>anomalous span</span><span>#n: onset order, +time after the first onset</span>
      <span>priority of a metric: <select id="prio-metric">${metrics.map((m) => `<option>${esc(m)}</option>`).join("")}</select>
      weight <input type="number" id="prio-weight" min="0.1" step="0.5" style="width:70px"> <label><input type="checkbox" id="prio-kpi"> KPI</label>
      <button class="act" id="prio-set">Set</button></span></div>
    <div id="members"></div></div>`;
  drawMembers(inc, metrics, byMetric, first, series);
  drawGraph($("#graph"), graph);
  wireActions(inc);
}

function timeline(items) {
  if (!items || !items.length) return `<li class="meta">nothing yet</li>`;
  return items.map((e) => {
    const d = { ...(e.details || {}) };
    const what = Object.entries(d).filter(([k, v]) => v !== "" && v != null && k !== "by" && k !== "manual")
      .map(([k, v]) => `${k}: ${Array.isArray(v) ? (v.length > 4 ? `${v.slice(0, 4).join(", ")} … (${v.length})` : v.join(", ")) : (typeof v === "object" ? JSON.stringify(v) : v)}`).join(" · ");
    return `<li><span class="meta">${when(e.at)}</span> <span class="kind">${esc(e.kind.replace("_", " "))}</span>
      ${e.actor ? `by <span class="by">${esc(e.actor)}</span>` : '<span class="meta">by stormeye</span>'}
      ${what ? `<div class="det">${esc(what)}</div>` : ""}</li>`;
  }).join("");
}

function drawMembers(inc, metrics, byMetric, first, series) {
  const box = $("#members");
  const s = series.series || {};
  box.innerHTML = metrics.map((m, k) => {
    const ms = byMetric.get(m);
    const a = ms[0];
    const arrow = a.direction > 0 ? "↑" : a.direction < 0 ? "↓" : "·";
    return `<div class="member${m === inc.root ? " root" : ""}" data-metric="${esc(m)}">
      <input type="checkbox" class="pick" value="${esc(m)}" title="tick to split off">
      <div class="who"><span class="rank">#${k + 1}</span> +${ago(a.start - first)} ${arrow} peak ${a.peak_score.toFixed(2)}${m === inc.root ? ' · <b>root</b>' : ""}${(a.evidence || {}).symptom ? ' · <span class="meta" title="joined at the release level while its machine had this incident open">symptom</span>' : ""}
        <span class="mono" title="${esc(m)}"><a href="#/search?metric=${encodeURIComponent(m)}">${esc(m)}</a></span></div>
      <div class="chart">${s[m] || isAlert(a) ? "" : `<span class="meta">${NO_SERIES}</span>`}</div></div>`;
  }).join("");
  const width = Math.max(300, box.clientWidth - 340);
  const sync = uPlot.sync(`inc-${inc.id}`);
  // one x range for every chart: the members share a time axis
  let lo = Infinity, hi = -Infinity;
  for (const m of metrics) {
    const w = s[m];
    if (!w) continue;
    lo = Math.min(lo, w.start);
    hi = Math.max(hi, w.start + (w.values.length - 1) * w.step);
  }
  // an alert has no series: its firing spans are drawn as a 0/1 line on the same axis
  const step = series.step || 60;
  if (!Number.isFinite(lo)) { lo = inc.start - 30 * step; hi = inc.end; }
  for (const m of metrics) {
    if (s[m] || !isAlert(byMetric.get(m)[0])) continue;
    s[m] = firing(byMetric.get(m), lo, hi, step);
  }
  box.querySelectorAll(".member").forEach((row) => {
    const m = row.dataset.metric;
    const w = s[m];
    if (!w) return;
    const xs = w.values.map((_, i) => w.start + i * w.step);
    const spans = byMetric.get(m).map((a) => [a.start, a.end + w.step]);
    const opts = {
      width, height: 64, legend: { show: false },
      cursor: { sync: { key: sync.key }, y: false },
      scales: { x: { time: true, range: [lo, hi] }, y: { range: yRange } },
      axes: [{ show: false }, { size: 44, ticks: { show: false }, font: "10px system-ui", values: (u, v) => v.map(short), splits: (u, i, min, max) => [min, max] }],
      series: [{}, { stroke: m === inc.root ? "#b42318" : "#1f6feb", width: 1.2, spanGaps: false, points: { show: false },
        ...(w.firing ? { paths: uPlot.paths.stepped({ align: 1 }), fill: "rgba(217,45,32,.18)" } : {}) }],
      hooks: { drawClear: [(u) => shade(u, spans)] },
    };
    charts.push(new uPlot(opts, [xs, w.values], row.querySelector(".chart")));
  });
  if (charts.length) { // one time axis under the last chart
    const axis = document.createElement("div");
    axis.className = "member";
    axis.innerHTML = `<span></span><span class="meta">UTC</span><div class="chart"></div>`;
    box.appendChild(axis);
    charts.push(new uPlot({ width, height: 34, legend: { show: false }, cursor: { show: false },
      scales: { x: { time: true, range: [lo, hi] }, y: { range: [0, 1] } }, axes: [{ size: 30, font: "11px system-ui", values: utcTicks, space: 70 }, { show: false }],
      series: [{}, { show: false }] }, [[lo, hi], [null, null]], axis.querySelector(".chart")));
  }
}
const NO_SERIES = "no series: the window store keeps a metric's points only while serve receives them (demo and ingest runs keep none)";
const isAlert = (a) => Boolean(a && (a.anomaly_evidence || {}).alert);
// an alert member as a series: 1 while firing (any of its spans), 0 otherwise, one point a step
function firing(spans, lo, hi, step) {
  const start = Math.floor(lo / step) * step, values = [];
  for (let t = start; t <= hi + step; t += step) values.push(spans.some((a) => t >= a.start && t <= a.end) ? 1 : 0);
  return { start, step, values, firing: true };
}
// y from the data (not from 0): a shift of a few percent must show
function yRange(u, min, max) {
  if (min == null || max == null) return [0, 1];
  if (min >= 0 && max <= 1 && u.series[1] && u.series[1].fill) return [0, 1.15]; // firing spans
  const pad = (max - min) * 0.08 || Math.abs(max) * 0.05 || 1;
  return [min - pad, max + pad];
}
// the x axis in UTC, 24-hour clock, whatever the browser's time zone
function utcTicks(u, vals) {
  const span = u.scales.x.max - u.scales.x.min;
  return vals.map((v) => { const w = when(v); return span > 2 * 86400 ? w.slice(5) : w.slice(11); });
}
function short(v) {
  if (v == null) return "";
  const a = Math.abs(v);
  return a >= 1e6 ? (v / 1e6).toFixed(1) + "M" : a >= 1e3 ? (v / 1e3).toFixed(1) + "k" : a >= 10 ? v.toFixed(0) : v.toFixed(2);
}
function shade(u, spans) {
  const ctx = u.ctx;
  ctx.save();
  ctx.fillStyle = getComputedStyle(document.documentElement).getPropertyValue("--span") || "rgba(220,38,38,.13)";
  for (const [a, b] of spans) {
    const x0 = u.valToPos(a, "x", true), x1 = u.valToPos(b, "x", true);
    ctx.fillRect(x0, u.bbox.top, Math.max(2, x1 - x0), u.bbox.height);
  }
  ctx.restore();
}

// The evidence graph: members as nodes, placed left to right by onset, spread by a small force
// layout; each edge is the evidence that brought a member in, coloured by what linked it.
const KIND_COLOUR = { names: "var(--names)", shape: "var(--shape)", time: "var(--time)", topology: "var(--topology)" };
function drawGraph(box, g) {
  const n = g.nodes.length;
  if (!n) { box.innerHTML = `<div class="empty">no members</div>`; return; }
  const W = Math.max(400, box.clientWidth || 600), H = 420, M = 30;
  const t0 = Math.min(...g.nodes.map((d) => d.start)), t1 = Math.max(...g.nodes.map((d) => d.start));
  // x follows the onset order (nodes come sorted by onset; equal onsets share a place)
  const starts = [...new Set(g.nodes.map((d) => d.start))].sort((a, b) => a - b);
  const place = new Map(starts.map((t, k) => [t, starts.length > 1 ? M + 40 + (k / (starts.length - 1)) * (W - 2 * M - 80) : W / 2]));
  const pos = g.nodes.map((d, i) => ({ x: place.get(d.start), y: M + ((i * 0.618034) % 1) * (H - 2 * M), fx: place.get(d.start) }));
  const k = Math.sqrt(((W - 2 * M) * (H - 2 * M)) / n) * 0.6;
  const iters = n > 120 ? 60 : 150;
  for (let it = 0; it < iters; it++) {
    const temp = 0.1 * (1 - it / iters) * k;
    const dx = new Float64Array(n), dy = new Float64Array(n);
    for (let i = 0; i < n; i++) for (let j = i + 1; j < n; j++) {
      let ex = pos[i].x - pos[j].x, ey = pos[i].y - pos[j].y;
      const d2 = ex * ex + ey * ey + 0.01, f = (k * k) / d2;
      dx[i] += ex * f; dy[i] += ey * f; dx[j] -= ex * f; dy[j] -= ey * f;
    }
    for (const e of g.edges) {
      const a = pos[e.source], b = pos[e.target];
      const ex = a.x - b.x, ey = a.y - b.y, d = Math.sqrt(ex * ex + ey * ey) + 0.01, f = d / k;
      dx[e.source] -= ex * f; dy[e.source] -= ey * f; dx[e.target] += ex * f; dy[e.target] += ey * f;
    }
    for (let i = 0; i < n; i++) {
      const d = Math.sqrt(dx[i] * dx[i] + dy[i] * dy[i]) + 0.01;
      pos[i].x += (dx[i] / d) * Math.min(d, temp) * 0.3 + (pos[i].fx - pos[i].x) * 0.2; // onset keeps x
      pos[i].y += (dy[i] / d) * Math.min(d, temp);
      pos[i].x = Math.max(M, Math.min(W - M, pos[i].x));
      pos[i].y = Math.max(M, Math.min(H - M, pos[i].y));
    }
  }
  const label = (m) => { const b = m.indexOf("{"); const name = b < 0 ? m : m.slice(0, b); const host = /(?:host|instance|pod|country)="([^"]*)"/.exec(m); return host ? `${name} ${host[1]}` : name; };
  const edgeSvg = g.edges.map((e) => {
    const a = pos[e.source], b = pos[e.target];
    const kind = e.kinds.includes("shape") ? "shape" : e.kinds.includes("names") ? "names" : e.kinds[0] || "time";
    const tip = `${g.nodes[e.source].metric}\n↔ ${g.nodes[e.target].metric}\nlinked by ${e.kinds.join(", ") || "weak evidence"}\nweight ${e.weight} · name ${e.name} · shape ${e.shape} · lag ${e.lag_s}s · onset gap ${e.onset_gap_s}s`;
    const dash = e.kinds.includes("topology") ? "" : ' stroke-dasharray="5 3"';
    return `<line x1="${a.x.toFixed(1)}" y1="${a.y.toFixed(1)}" x2="${b.x.toFixed(1)}" y2="${b.y.toFixed(1)}" stroke="${KIND_COLOUR[kind]}"${dash}><title>${esc(tip)}</title></line>`;
  }).join("");
  const showLabels = n <= 40;
  const nodeSvg = g.nodes.map((d, i) => {
    const p = pos[i], r = 5 + 5 * d.peak_score;
    const fill = d.direction > 0 ? "#d92d20" : d.direction < 0 ? "#1570ef" : "#667085";
    return `<g><circle cx="${p.x.toFixed(1)}" cy="${p.y.toFixed(1)}" r="${r.toFixed(1)}" fill="${fill}" class="${d.root ? "root" : ""}"><title>${esc(`#${i + 1} ${d.metric}\nonset ${when(d.start)} UTC · peak ${d.peak_score.toFixed(2)}`)}</title></circle>
      ${showLabels ? `<text x="${(p.x > W / 2 ? p.x - r - 2 : p.x + r + 2).toFixed(1)}" y="${(p.y + 3).toFixed(1)}"${p.x > W / 2 ? ' text-anchor="end"' : ""}>${esc(label(d.metric))}</text>` : ""}</g>`;
  }).join("");
  box.innerHTML = `<svg class="graph" viewBox="0 0 ${W} ${H}" data-nodes="${n}" data-edges="${g.edges.length}">${edgeSvg}${nodeSvg}
    <text x="${M}" y="${H - 8}">${when(t0)}</text><text x="${W - M - 80}" y="${H - 8}">${when(t1)} UTC</text></svg>`;
}

function wireActions(inc) {
  const id = encodeURIComponent(inc.id);
  const done = (text) => { flash(text); showIncident(inc.id); };
  $("#prio-set").addEventListener("click", () => {
    const w = $("#prio-weight").value;
    const body = { metric: $("#prio-metric").value, weight: w ? Number(w) : null, kpi: $("#prio-kpi").checked };
    api("/api/v1/metrics/priority", { method: "PUT", body }).then(() => flash(`priority of ${body.metric} set`), fail);
  });
  if (inc.status !== "open") return; // resolved and merged incidents offer no action
  $("#ack").addEventListener("click", () => api(`/api/v1/incidents/${id}/acknowledge`, { method: "POST", body: {} }).then((r) => done(`acknowledged by ${r.action.actor}`), fail));
  $("#resolve").addEventListener("click", () => {
    if (confirm(`Resolve ${inc.id}?`)) api(`/api/v1/incidents/${id}/resolve`, { method: "POST", body: {} }).then((r) => done(`resolved by ${r.action.actor}`), fail);
  });
  const real = $("#real");
  if (real) real.addEventListener("click", () => api(`/api/v1/incidents/${id}/real`, { method: "POST", body: {} }).then((r) => done(`marked real by ${r.action.actor}: it pages`), fail));
  $("#noise").addEventListener("click", () => {
    const scope = prompt("Not a problem: when is it routine? any, daily (this time of day), or HH:MM-HH:MM UTC (empty: daily when it repeats)", "");
    if (scope === null) return;
    api(`/api/v1/incidents/${id}/noise`, { method: "POST", body: scope.trim() ? { scope: scope.trim() } : {} })
      .then((r) => done(`marked noise by ${r.action.actor}: profile ${r.profile} (${r.action.details.scope})`), fail);
  });
  $("#merge").addEventListener("click", () => {
    const from = $("#merge-from").value.trim();
    if (!from) return flash("type the id of the incident to merge into this one", true);
    api(`/api/v1/incidents/${id}/merge`, { method: "POST", body: { from } }).then(() => done(`${from} merged into ${inc.id}`), fail);
  });
  $("#split").addEventListener("click", () => {
    const metrics = [...document.querySelectorAll("input.pick:checked")].map((c) => c.value);
    if (!metrics.length) return flash("tick the members to split off first", true);
    api(`/api/v1/incidents/${id}/split`, { method: "POST", body: { metrics } })
      .then((r) => { flash(`${metrics.length} metric(s) split off into ${r.incident}`); location.hash = `#/incident/${encodeURIComponent(r.incident)}`; }, fail);
  });
}

// -- metric search: what else looks like this ----------------------------------------------------
function showSearch(metric) {
  main.innerHTML = `
  <div class="card"><form class="filters" id="search-form">
    <label>part of a metric name <input type="text" name="q" id="q" autocomplete="off" placeholder="checkout latency" value=""></label>
    <button class="act primary">search</button></form>
    <div class="results" id="results"></div></div>
  <div id="metric"></div>`;
  let timer = 0;
  const q = $("#q");
  const search = async () => {
    const text = q.value.trim();
    if (!text) { $("#results").innerHTML = ""; return; }
    try {
      const r = await api(`/api/v1/metrics/search?q=${encodeURIComponent(text)}&limit=30`);
      $("#results").innerHTML = r.metrics.length ? r.metrics.map((m) => `<a class="mono" href="#/search?metric=${encodeURIComponent(m)}">${esc(m)}</a>`).join("") + (r.more ? `<div class="meta">… more: type more of the name</div>` : "")
        : `<div class="meta">no metric name holds “${esc(text)}”</div>`;
    } catch (e) { fail(e); }
  };
  q.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(search, 200); });
  $("#search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
  if (metric) { q.value = metric.split("{")[0]; search(); showMetric(metric); } else q.focus();
}
async function showMetric(metric) {
  const box = $("#metric");
  box.innerHTML = `<div class="empty">loading…</div>`;
  let s, sim;
  try {
    [s, sim] = await Promise.all([
      api(`/api/v1/metrics/series?metric=${encodeURIComponent(metric)}`),
      api(`/api/v1/metrics/similar?metric=${encodeURIComponent(metric)}&limit=10`),
    ]);
  } catch (e) { if (!(e instanceof NeedLogin)) box.innerHTML = `<div class="card empty">${esc(e.message)}</div>`; return; }
  const rank = (rows, kind) => rows.length ? rows.map((r) => `<div class="sim" data-metric="${esc(r.metric)}" title="${esc(r.metric)}">
      <span class="num">${r.similarity.toFixed(2)}</span>
      <span><span class="bar ${kind}" style="display:block;width:${Math.round(Math.abs(r.similarity) * 100)}%"></span><span class="mono">${esc(r.metric)}</span>${r.lag_s ? ` <span class="meta">lag ${r.lag_s}s</span>` : ""}</span></div>`).join("")
    : `<div class="meta">nothing similar enough</div>`;
  box.innerHTML = `
  <div class="card"><h2 class="mono">${esc(metric)}</h2><div id="metric-chart"></div></div>
  <div class="grid2">
    <div class="card"><h2>Most similar by name</h2><div class="meta">IDF-weighted cosine of the names' label pairs</div><div id="by-name">${rank(sim.by_name, "")}</div></div>
    <div class="card"><h2>Most similar by shape</h2><div class="meta">lagged correlation of the recent changes (r; negative: mirrored)</div><div id="by-shape">${sim.by_shape_note ? `<div class="meta">${esc(sim.by_shape_note)}</div>` : rank(sim.by_shape, "shape")}</div></div>
  </div>`;
  const xs = s.values.map((_, i) => s.start + i * s.step);
  const el = $("#metric-chart");
  charts.push(new uPlot({ width: Math.max(400, el.clientWidth), height: 220, legend: { show: false },
    scales: { x: { time: true }, y: { range: yRange } }, series: [{}, { stroke: "#1f6feb", width: 1.5, points: { show: false } }],
    axes: [{ values: utcTicks, space: 70 }, { size: 56, values: (u, v) => v.map(short) }] }, [xs, s.values], el));
  box.querySelectorAll(".sim").forEach((row) => row.addEventListener("click", () => { location.hash = `#/search?metric=${encodeURIComponent(row.dataset.metric)}`; }));
}

// start: ask the server whether it wants a token (and whether the one this tab holds is valid)
(async () => {
  try { auth = await checkAuth(token()); } catch (e) { flash(e.message, true); }
  if (!auth.valid) sessionStorage.removeItem(TOKEN_KEY);
  showWho();
  document.body.dataset.ready = "1";
  route();
})();
