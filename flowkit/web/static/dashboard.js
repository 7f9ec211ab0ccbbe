// flowkit dashboard: polls the JSON API about once a second and redraws the job graph,
// the vertex table, the exception history and the checkpoint history. No framework; the graph is plain SVG laid
// out in layers (a vertex sits one layer right of its deepest input).
"use strict";

const POLL_MS = 1000;
const SVG_NS = "http://www.w3.org/2000/svg";
const NODE_W = 250;
const NODE_H = 120;
const GAP_X = 90;
const GAP_Y = 28;
const PAD = 16;
// Watermarks beyond this are flowkit's "none yet" / "end of stream" markers (±2^63).
const WATERMARK_LIMIT = 9e15;

const state = {
  // the job shown (a link may name it: /?job=<id>); null = follow the most recent one
  jobId: new URLSearchParams(location.search).get("job"),
  planFor: null,      // job id whose plan is drawn
  plan: null,
  overview: null,
  failures: 0,
  ended: new Map(),   // job id -> status an action reported (answers in flight may lag)
  selected: null,     // vertex id whose operators and subtasks are shown
  exceptionsShown: null,  // what the exception panel was drawn from (redrawn on change)
  openTracebacks: new Set(),  // keys of the exceptions whose traceback is expanded
};

const $ = (id) => document.getElementById(id);

async function getJSON(path) {
  const response = await fetch(path, { cache: "no-store" });
  const body = await response.json();
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}

async function postJSON(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body || {}),
  });
  const answer = await response.json();
  if (!response.ok) throw new Error(answer.error || response.statusText);
  return answer;
}

// ------------------------------------------------------------------ formatting
function fmtRate(x) {
  if (x === null || x === undefined) return "—";
  if (x >= 1e6) return (x / 1e6).toFixed(2) + "M/s";
  if (x >= 1e3) return (x / 1e3).toFixed(1) + "k/s";
  return x.toFixed(1) + "/s";
}

function fmtCount(x) {
  if (x === null || x === undefined) return "—";
  return Number(x).toLocaleString("en-US");
}

function fmtPercent(x) {
  if (x === null || x === undefined) return "—";
  return Math.round(x * 100) + "%";
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined) return "—";
  if (ms < 1000) return Math.round(ms) + " ms";
  let s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  s = s % 60;
  if (d >= 2) return `${d}d ${h}h`;
  if (d || h) return `${d * 24 + h}h ${m}m ${s}s`;
  if (m) return `${m}m ${s}s`;
  return (ms / 1000).toFixed(1) + " s";
}

function fmtWatermark(w, short) {
  if (w === null || w === undefined || w <= -WATERMARK_LIMIT) return "none";
  if (w >= WATERMARK_LIMIT) return "end";
  // epoch milliseconds after 1973 read best as a UTC date and time; small values as numbers
  if (w > 1e11) {
    const text = new Date(w).toISOString().replace("T", " ").replace("Z", "");
    return short ? text.slice(11) : text;
  }
  return String(w);
}

function knownWatermark(w) {
  return w !== null && w !== undefined && w > -WATERMARK_LIMIT;
}

function fmtLag(ms) {
  if (ms === null || ms === undefined) return "—";
  return fmtDuration(ms);
}

function fmtBytes(n) {
  if (n === null || n === undefined) return "—";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / (1 << 10)).toFixed(1) + " KiB";
  return n + " B";
}

function fmtTime(ms) {
  if (!ms) return "—";
  return new Date(ms).toLocaleTimeString("en-GB");
}

function level(v) {
  const l = v && v.backpressure_level;
  return l === "low" || l === "high" ? l : "ok";
}

// ------------------------------------------------------------------ graph
function svg(tag, attrs, text) {
  const el = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  if (text !== undefined) el.textContent = text;
  return el;
}

// Layer of each vertex: 0 for sources, else one more than its deepest input.
function layers(plan) {
  const inputs = new Map(plan.vertices.map((v) => [v.id, []]));
  for (const e of plan.edges) if (inputs.has(e.target)) inputs.get(e.target).push(e.source);
  const layer = new Map();
  const visit = (id, seen) => {
    if (layer.has(id)) return layer.get(id);
    if (seen.has(id)) return 0; // a cycle cannot happen in a job graph; stay safe anyway
    seen.add(id);
    let l = 0;
    for (const s of inputs.get(id) || []) l = Math.max(l, visit(s, seen) + 1);
    layer.set(id, l);
    return l;
  };
  for (const v of plan.vertices) visit(v.id, new Set());
  return layer;
}

function drawGraph(plan) {
  const root = $("job-graph");
  root.replaceChildren();
  const layer = layers(plan);
  const columns = new Map();
  for (const v of plan.vertices) {
    const l = layer.get(v.id);
    if (!columns.has(l)) columns.set(l, []);
    columns.get(l).push(v);
  }
  const tallest = Math.max(1, ...[...columns.values()].map((c) => c.length));
  const height = PAD * 2 + tallest * NODE_H + (tallest - 1) * GAP_Y;
  const width = PAD * 2 + columns.size * NODE_W + (columns.size - 1) * GAP_X;
  const pos = new Map();
  for (const [l, column] of columns) {
    const used = column.length * NODE_H + (column.length - 1) * GAP_Y;
    column.forEach((v, i) => {
      pos.set(v.id, {
        x: PAD + l * (NODE_W + GAP_X),
        y: (height - used) / 2 + i * (NODE_H + GAP_Y),
      });
    });
  }
  root.setAttribute("viewBox", `0 0 ${width} ${height}`);
  root.style.height = height + "px";
  root.style.maxWidth = width + "px";

  const defs = svg("defs");
  const marker = svg("marker", {
    id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5",
    markerWidth: "7", markerHeight: "7", orient: "auto-start-reverse",
  });
  marker.appendChild(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#98a2b3" }));
  defs.appendChild(marker);
  root.appendChild(defs);

  for (const e of plan.edges) {
    const a = pos.get(e.source);
    const b = pos.get(e.target);
    if (!a || !b) continue;
    const x1 = a.x + NODE_W, y1 = a.y + NODE_H / 2, x2 = b.x, y2 = b.y + NODE_H / 2;
    const mid = (x1 + x2) / 2;
    const g = svg("g", {
      class: "edge", "data-source": e.source, "data-target": e.target,
      "data-partitioning": e.partitioning,
    });
    g.appendChild(svg("path", {
      d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`, "marker-end": "url(#arrow)",
    }));
    let label = e.partitioning.toUpperCase();
    if (e.side_output) label += ` [${e.side_output}]`;
    g.appendChild(svg("text", { x: mid, y: (y1 + y2) / 2 - 6, "text-anchor": "middle", class: "partitioning" }, label));
    g.appendChild(svg("text", { x: mid, y: (y1 + y2) / 2 + 12, "text-anchor": "middle", class: "channels" },
      `${e.channels} channel${e.channels === 1 ? "" : "s"}`));
    root.appendChild(g);
  }

  for (const v of plan.vertices) {
    const p = pos.get(v.id);
    const g = svg("g", {
      class: "vertex", "data-vertex-id": v.id, "data-backpressure": "ok",
      transform: `translate(${p.x} ${p.y})`,
    });
    const title = svg("title", {}, v.name);
    g.appendChild(title);
    g.appendChild(svg("rect", { class: "box", width: NODE_W, height: NODE_H }));
    const name = svg("text", { x: 10, y: 19, class: "vertex-name" }, v.name);
    g.appendChild(name);
    const badge = svg("text", { x: NODE_W - 10, y: 19, "text-anchor": "end", class: "parallelism small" },
      `×${v.parallelism}`);
    g.appendChild(badge);
    g.appendChild(svg("text", { x: 10, y: 40, class: "rate-in", "data-value": "0" }, "in —"));
    g.appendChild(svg("text", { x: NODE_W / 2 + 5, y: 40, class: "rate-out", "data-value": "0" }, "out —"));
    g.appendChild(svg("text", { x: 10, y: 58, class: "watermark small" }, "watermark —"));
    g.appendChild(svg("text", { x: 10, y: 75, class: "lag small" }, ""));
    g.appendChild(svg("text", { x: NODE_W - 10, y: 75, "text-anchor": "end", class: "busy small" }, "busy —"));
    g.appendChild(svg("text", { x: 10, y: 92, class: "backpressure small" }, "backpressure ok"));
    g.appendChild(svg("rect", { class: "busy-track", x: 10, y: 102, width: NODE_W - 20, height: 8, rx: 2 }));
    g.appendChild(svg("rect", { class: "busy-bar", x: 10, y: 102, width: 0, height: 8, rx: 2 }));
    g.addEventListener("click", () => select(v.id));
    root.appendChild(g);
    // measured once drawn: the name ends 8 px before the ×N badge
    fitText(name, v.name, NODE_W - 10 - badge.getComputedTextLength() - 10 - 8);
  }
}

// Show as much of `full` as fits into `maxWidth` px, cut with "…" (the vertex's <title>
// keeps the whole name as its tooltip).
function fitText(el, full, maxWidth) {
  el.textContent = full;
  if (!(maxWidth > 0) || el.getComputedTextLength() <= maxWidth) return;
  let fits = 0;
  let tooLong = full.length;
  while (tooLong - fits > 1) {
    const mid = Math.floor((fits + tooLong) / 2);
    el.textContent = full.slice(0, mid).trimEnd() + "…";
    if (el.getComputedTextLength() <= maxWidth) fits = mid;
    else tooLong = mid;
  }
  el.textContent = full.slice(0, fits).trimEnd() + "…";
}

function setText(g, selector, text, value) {
  const el = g.querySelector(selector);
  if (!el) return;
  el.textContent = text;
  if (value !== undefined) el.setAttribute("data-value", String(value));
}

function updateGraph(vertices) {
  for (const v of vertices) {
    const g = $("job-graph").querySelector(`.vertex[data-vertex-id="${v.id}"]`);
    if (!g) continue;
    const l = level(v);
    g.setAttribute("data-backpressure", l);
    setText(g, ".rate-in", "in " + fmtRate(v.records_in_per_second), v.records_in_per_second || 0);
    setText(g, ".rate-out", "out " + fmtRate(v.records_out_per_second), v.records_out_per_second || 0);
    // a sink has no output watermark: show what reaches it
    const wm = knownWatermark(v.output_watermark) || !knownWatermark(v.input_watermark)
      ? "watermark " + fmtWatermark(v.output_watermark, true)
      : "input watermark " + fmtWatermark(v.input_watermark, true);
    setText(g, ".watermark", wm, v.output_watermark ?? v.input_watermark ?? "");
    const lag = v.watermark_lag_ms;
    setText(g, ".lag", lag === null || lag === undefined ? "" : "lag " + fmtLag(lag));
    setText(g, ".backpressure", `backpressure ${l} (${fmtPercent(v.backpressured_ratio)})`);
    setText(g, ".busy", "busy " + fmtPercent(v.busy_ratio), v.busy_ratio || 0);
    const bar = g.querySelector(".busy-bar");
    bar.setAttribute("width", String(Math.max(0, Math.min(1, v.busy_ratio || 0)) * (NODE_W - 20)));
  }
}

// ------------------------------------------------------------------ tables
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}

function updateVertexTable(vertices) {
  const body = $("vertex-table").querySelector("tbody");
  body.replaceChildren();
  for (const v of vertices) {
    const row = document.createElement("tr");
    row.setAttribute("data-vertex-row", v.id);
    if (String(v.id) === String(state.selected)) row.classList.add("selected");
    row.addEventListener("click", () => select(v.id));
    cell(row, v.name, "name").title = v.name;
    cell(row, String(v.parallelism), "num");
    cell(row, v.status || "—");
    cell(row, fmtRate(v.records_in_per_second), "num rate-in");
    cell(row, fmtRate(v.records_out_per_second), "num rate-out");
    cell(row, fmtCount(v.records_in), "num");
    cell(row, fmtCount(v.records_out), "num");
    const bp = cell(row, "");
    const badge = document.createElement("span");
    badge.className = "level";
    badge.setAttribute("data-level", level(v));
    badge.textContent = `${level(v)} ${fmtPercent(v.backpressured_ratio)}`;
    bp.appendChild(badge);
    cell(row, fmtPercent(v.busy_ratio), "num");
    cell(row, fmtPercent(v.idle_ratio), "num");
    cell(row, fmtWatermark(v.input_watermark), "input-watermark");
    cell(row, fmtWatermark(v.output_watermark), "output-watermark");
    cell(row, fmtLag(v.watermark_lag_ms), "num");
    cell(row, fmtCount(v.late_records_dropped), "num");
    body.appendChild(row);
  }
}

// ------------------------------------------------------------------ vertex detail
function select(vertexId) {
  state.selected = vertexId;
  for (const g of $("job-graph").querySelectorAll(".vertex")) {
    g.classList.toggle("selected", g.getAttribute("data-vertex-id") === String(vertexId));
  }
  for (const row of $("vertex-table").querySelectorAll("tbody tr")) {
    row.classList.toggle("selected", row.getAttribute("data-vertex-row") === String(vertexId));
  }
  if (state.overview) refreshDetail(state.overview.id).catch(() => {});
}

async function refreshDetail(jobId) {
  if (state.selected === null) return;
  const v = await getJSON(`api/jobs/${jobId}/vertices/${state.selected}`);
  $("vertex-detail").hidden = false;
  $("detail-name").textContent = `${v.name} ×${v.parallelism}`;
  const ops = $("operator-table").querySelector("tbody");
  ops.replaceChildren();
  for (const op of v.operators || []) {
    const row = document.createElement("tr");
    row.setAttribute("data-operator", op.name);
    cell(row, op.name, "name").title = op.name;
    cell(row, fmtRate(op.records_in_per_second), "num rate-in").setAttribute("data-value", String(op.records_in_per_second || 0));
    cell(row, fmtRate(op.records_out_per_second), "num rate-out").setAttribute("data-value", String(op.records_out_per_second || 0));
    cell(row, fmtCount(op.records_in), "num");
    cell(row, fmtCount(op.records_out), "num");
    cell(row, fmtWatermark(op.input_watermark));
    cell(row, fmtWatermark(op.output_watermark));
    cell(row, fmtCount(op.late_records_dropped), "num");
    ops.appendChild(row);
  }
  const subs = $("subtask-table").querySelector("tbody");
  subs.replaceChildren();
  for (const s of v.subtasks || []) {
    const row = document.createElement("tr");
    row.setAttribute("data-subtask", s.subtask_index);
    cell(row, `${s.subtask_index + 1}/${s.parallelism}`, "num");
    cell(row, s.status || "—");
    cell(row, fmtRate(s.records_in_per_second), "num");
    cell(row, fmtRate(s.records_out_per_second), "num");
    cell(row, fmtCount(s.records_in), "num");
    cell(row, fmtCount(s.records_out), "num");
    const bp = cell(row, "");
    const badge = document.createElement("span");
    badge.className = "level";
    badge.setAttribute("data-level", level(s));
    badge.textContent = `${level(s)} ${fmtPercent(s.backpressured_ratio)}`;
    bp.appendChild(badge);
    cell(row, fmtPercent(s.busy_ratio), "num");
    cell(row, fmtPercent(s.idle_ratio), "num");
    cell(row, fmtCount(s.buffers_in_use), "num");
    cell(row, fmtWatermark(s.input_watermark));
    cell(row, fmtLag(s.watermark_lag_ms), "num");
    consumerLagCell(row, s.consumer_lag, s.consumer_lag_bytes);
    cell(row, s.last_checkpoint_id ? `#${s.last_checkpoint_id} · ${fmtBytes(s.last_checkpoint_size)}` : "—");
    subs.appendChild(row);
  }
}

// Sources: the total behind over the splits (records, or bytes for sources that count
// their backlog in bytes); each split's lag in the tooltip.
function consumerLagCell(row, lag, lagBytes) {
  let splits = Object.entries(lag || {});
  let fmt = fmtCount;
  if (!splits.length && lagBytes && Object.keys(lagBytes).length) {
    splits = Object.entries(lagBytes);
    fmt = fmtBytes;
  }
  splits.sort(([a], [b]) => a.localeCompare(b));
  if (!splits.length) return cell(row, "—", "num");
  const total = splits.reduce((sum, [, n]) => sum + n, 0);
  const td = cell(row, fmt(total), "num");
  td.classList.add("consumer-lag");
  td.title = splits.map(([split, n]) => `${split}: ${fmt(n)}`).join("\n");
  return td;
}

function pick(entry, ...names) {
  for (const n of names) if (entry[n] !== undefined && entry[n] !== null) return entry[n];
  return null;
}

function updateCheckpoints(cp) {
  const parts = [];
  if (!cp.enabled) parts.push("checkpointing is off");
  else {
    parts.push(`${cp.completed} completed`, `${cp.failed} failed`);
    if (cp.in_progress) parts.push(`${cp.in_progress} in progress`);
  }
  if (cp.restored_from) parts.push(`restored from ${typeof cp.restored_from === "string" ? cp.restored_from : JSON.stringify(cp.restored_from)}`);
  $("checkpoint-summary").textContent = parts.join(" · ");
  const body = $("checkpoint-history").querySelector("tbody");
  body.replaceChildren();
  const history = (cp.history || []).slice().reverse();
  if (!history.length) {
    const row = document.createElement("tr");
    const td = cell(row, cp.enabled ? "no checkpoint yet" : "checkpointing is off", "empty");
    td.colSpan = 7;
    body.appendChild(row);
    return;
  }
  for (const h of history) {
    const row = document.createElement("tr");
    const status = String(pick(h, "status") || "").toUpperCase();
    row.className = "checkpoint" + (status === "FAILED" ? " failed" : "");
    row.setAttribute("data-checkpoint-id", pick(h, "id", "checkpoint_id") ?? "");
    cell(row, String(pick(h, "id", "checkpoint_id") ?? "—"), "num");
    cell(row, pick(h, "is_savepoint", "savepoint") ? "savepoint" : (pick(h, "kind", "type") || "checkpoint"));
    cell(row, status || "—");
    cell(row, fmtTime(pick(h, "trigger_time_ms", "trigger_timestamp_ms", "trigger_timestamp", "start_time_ms")));
    cell(row, fmtDuration(pick(h, "duration_ms", "end_to_end_duration_ms")), "num");
    cell(row, fmtBytes(pick(h, "state_bytes", "state_size", "size_bytes")), "num");
    cell(row, pick(h, "directory", "external_path", "path") || pick(h, "failure", "error") || "");
    body.appendChild(row);
  }
}

// ------------------------------------------------------------------ exceptions
// What followed a failure: the checkpoint a restart restored, or the job's end.
function outcome(entry, jobStatus, newest) {
  if (entry.restarted) {
    return entry.restored_from
      ? { kind: "restarted", text: `restarted from ${entry.restored_from}` }
      : { kind: "restarted", text: "restarted from the beginning" };
  }
  if (newest && jobStatus === "FAILED") return { kind: "failed", text: "job failed" };
  if (newest && (jobStatus === "RUNNING" || jobStatus === "RESTARTING")) {
    return { kind: "restarting", text: "restarting…" };
  }
  return { kind: "failed", text: "no restart" };
}

function exceptionKey(entry) {
  return `${entry.timestamp_ms}|${entry.subtask}|${entry.exception_type}`;
}

function updateExceptions(history, jobStatus) {
  const entries = history.entries || [];
  const signature = JSON.stringify([jobStatus, history.total, entries.map(exceptionKey),
    entries.map((e) => [e.restarted, e.restored_from])]);
  if (state.exceptionsShown === signature) return;  // keep expanded tracebacks as they are
  state.exceptionsShown = signature;
  const total = history.total || 0;
  let summary = total === 0 ? "no failures" : `${total} failure${total === 1 ? "" : "s"}`;
  if (history.truncated) summary += ` · the newest ${entries.length} shown`;
  $("exception-summary").textContent = summary;
  const root = $("exception-history");
  root.replaceChildren();
  if (!entries.length) {
    const p = document.createElement("p");
    p.className = "empty";
    p.textContent = "no failures";
    root.appendChild(p);
    return;
  }
  entries.forEach((entry, index) => {
    const what = outcome(entry, jobStatus, index === 0);
    const box = document.createElement("div");
    box.className = "exception";
    box.setAttribute("data-exception-index", String(index));
    box.setAttribute("data-outcome", what.kind);
    const head = document.createElement("div");
    head.className = "exception-head";
    const add = (cls, text) => {
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      head.appendChild(span);
      return span;
    };
    add("time", new Date(entry.timestamp_ms).toLocaleTimeString("en-GB")).title =
      new Date(entry.timestamp_ms).toISOString();
    add("subtask", entry.subtask || "—");
    const text = add("what", "");
    const type = document.createElement("b");
    type.className = "type";
    type.textContent = entry.exception_type;
    const message = document.createElement("span");
    message.className = "message";
    message.textContent = entry.message;
    text.append(type, ": ", message);
    add("outcome", what.text);
    box.appendChild(head);
    const details = document.createElement("details");
    const key = exceptionKey(entry);
    details.open = state.openTracebacks.has(key);
    details.addEventListener("toggle", () => {
      if (details.open) state.openTracebacks.add(key);
      else state.openTracebacks.delete(key);
    });
    const label = document.createElement("summary");
    label.textContent = "traceback";
    const pre = document.createElement("pre");
    pre.className = "traceback";
    pre.textContent = entry.traceback;
    details.append(label, pre);
    box.appendChild(details);
    root.appendChild(box);
  });
}

function showStatus(name, status, ended) {
  const el = $("job-status");
  el.textContent = status;
  el.setAttribute("data-status", status);
  for (const id of ["savepoint-button", "stop-button", "cancel-button"]) $(id).disabled = ended;
  document.title = `${name} · ${status} · flowkit`;
}

function updateHeader(o) {
  $("job-name").textContent = o.name;
  $("job-duration").textContent = fmtDuration(o.duration_ms);
  $("job-restarts").textContent = String(o.restarts);
  $("job-parallelism").textContent = String(o.parallelism);
  showStatus(o.name, o.status, o.end_time_ms !== null);
}

// The server closes once its last job has ended, so the page may get no further update:
// show the end an action reported at once.
function showEnded(job, status) {
  state.ended.set(job.id, status);
  job.status = status;
  job.end_time_ms = Date.now();
  showStatus(job.name, status, true);
}

function updateJobSelect(jobs, shown) {
  const select = $("job-select");
  select.hidden = jobs.length < 2;
  const ids = jobs.map((j) => j.id).join(",");
  if (select.dataset.ids !== ids) {
    select.dataset.ids = ids;
    select.replaceChildren(...jobs.map((j) => {
      const option = document.createElement("option");
      option.value = j.id;
      option.textContent = `${j.name} (${j.id.slice(0, 8)})`;
      return option;
    }));
  }
  select.value = shown;
}

// ------------------------------------------------------------------ polling
async function refresh() {
  const { jobs } = await getJSON("api/jobs");
  const conn = $("connection");
  conn.textContent = "live";
  conn.setAttribute("data-state", "live");
  if (!jobs.length) return;
  const overview = jobs.find((j) => j.id === state.jobId) || jobs[jobs.length - 1];
  if (overview.end_time_ms === null && state.ended.has(overview.id)) {
    overview.status = state.ended.get(overview.id);
    overview.end_time_ms = Date.now();
  }
  state.overview = overview;
  updateJobSelect(jobs, overview.id);
  if (state.planFor !== overview.id) {
    state.plan = await getJSON(`api/jobs/${overview.id}/plan`);
    state.planFor = overview.id;
    state.selected = null;  // vertex ids belong to a job
    state.exceptionsShown = null;
    $("vertex-detail").hidden = true;
    drawGraph(state.plan);
  }
  updateHeader(overview);
  updateGraph(overview.vertices);
  updateVertexTable(overview.vertices);
  updateCheckpoints(await getJSON(`api/jobs/${overview.id}/checkpoints`));
  updateExceptions(await getJSON(`api/jobs/${overview.id}/exceptions`), overview.status);
  await refreshDetail(overview.id);
}

async function poll() {
  try {
    await refresh();
    state.failures = 0;
  } catch (err) {
    state.failures += 1;
    const conn = $("connection");
    conn.textContent = state.failures > 1 ? "disconnected (the job may have ended)" : "retrying";
    conn.setAttribute("data-state", "lost");
  }
  setTimeout(poll, POLL_MS);
}

// ------------------------------------------------------------------ actions
function report(text, isError) {
  const el = $("action-result");
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

async function act(button, describe, run) {
  const job = state.overview;
  if (!job) return;
  button.disabled = true;
  report(`${describe}…`);
  try {
    report(await run(job));
  } catch (err) {
    report(`${describe} failed: ${err.message}`, true);
  } finally {
    button.disabled = job.end_time_ms !== null;
  }
}

$("savepoint-button").addEventListener("click", (ev) => {
  const directory = window.prompt("Savepoint directory (on the machine running the job):", "savepoints/sp-" + Date.now());
  if (!directory) return;
  act(ev.currentTarget, "Savepoint", async (job) => {
    const answer = await postJSON(`api/jobs/${job.id}/savepoints`, { directory });
    return `Savepoint written to ${answer.directory}`;
  });
});

$("stop-button").addEventListener("click", (ev) => {
  const directory = window.prompt("Stop with a savepoint into directory:", "savepoints/stop-" + Date.now());
  if (!directory) return;
  const drain = window.confirm("Drain first (fire every event-time timer and window)?");
  act(ev.currentTarget, "Stop", async (job) => {
    const answer = await postJSON(`api/jobs/${job.id}/stop`, { directory, drain });
    showEnded(job, answer.status);
    return `Stopped; savepoint in ${answer.directory}`;
  });
});

$("cancel-button").addEventListener("click", (ev) => {
  if (!window.confirm("Cancel the job?")) return;
  act(ev.currentTarget, "Cancel", async (job) => {
    const answer = await postJSON(`api/jobs/${job.id}/cancel`);
    showEnded(job, answer.status);
    return `Job ${answer.status.toLowerCase()}`;
  });
});

$("job-select").addEventListener("change", (ev) => {
  state.jobId = ev.currentTarget.value;
  refresh().catch(() => {});
});

poll();
