// The jobs dashboard: reads the public API with the key kept in session storage, refreshes
// while jobs run, and compares jobs side by side. `?compare=id,id` opens a comparison.
"use strict";

// Lists are lean: a finished job's metrics come from its own route, once (they do not change).
const state = { models: new Map(), jobs: [], details: new Map(), selected: new Set(), timer: null };
const $ = (id) => document.getElementById(id);

function key() { return sessionStorage.getItem("compressd-key"); }

async function api(path) {
  const headers = {};
  if (key()) headers.Authorization = "Bearer " + key();
  const res = await fetch(path, { headers });
  if (res.status === 401) { $("key-form").classList.remove("hidden"); throw new Error("an API key is needed"); }
  if (!res.ok) {
    let detail = res.statusText;
    try { const p = await res.json(); detail = p.detail || p.title || detail; } catch (_) {}
    throw new Error(path + ": " + res.status + " " + detail);
  }
  return res;
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text == null ? "–" : String(text);
  if (cls) td.className = cls;
  return td;
}

const fmt = {
  pct: (v) => (v == null ? null : (v * 100).toFixed(2) + " %"),
  num: (v, d) => (v == null ? null : Number(v).toFixed(d)),
  pair: (a, b, f) => (a == null && b == null ? null : (f(a) ?? "–") + " → " + (f(b) ?? "–")),
};

function summary(job) {
  const full = state.details.get(job.id) || job;
  return (full.metrics && full.metrics.summary) || {};
}
function ops(job) { return job.pipeline.map((s) => s.op).join(" → "); }

function renderModels() {
  const body = $("models").tBodies[0];
  body.replaceChildren();
  const select = $("model");
  const chosen = select.value;
  select.replaceChildren(new Option("any", ""));
  for (const m of state.models.values()) {
    const tr = document.createElement("tr");
    tr.append(cell(m.id), cell(m.name), cell(m.format), cell(m.size_bytes, "num"),
      cell(m.parameter_count, "num"), cell(m.created_at));
    body.append(tr);
    select.append(new Option(m.name + " (" + m.id.slice(0, 8) + ")", m.id));
  }
  select.value = chosen;
}

function renderJobs() {
  const body = $("jobs").tBodies[0];
  body.replaceChildren();
  for (const job of state.jobs) {
    const s = summary(job);
    const tr = document.createElement("tr");
    tr.dataset.job = job.id;
    const pick = document.createElement("input");
    pick.type = "checkbox";
    pick.checked = state.selected.has(job.id);
    pick.onchange = () => { pick.checked ? state.selected.add(job.id) : state.selected.delete(job.id); };
    const first = document.createElement("td");
    first.append(pick);
    const model = state.models.get(job.model_id);
    const progress = document.createElement("td");
    progress.innerHTML = '<span class="bar"><span></span></span> ';
    progress.firstChild.firstChild.style.width = Math.round(job.progress * 100) + "%";
    progress.append(Math.round(job.progress * 100) + " %");
    const report = document.createElement("td");
    if (job.status === "succeeded") {
      const a = document.createElement("a");
      a.href = "#"; a.textContent = "report";
      a.onclick = (e) => { e.preventDefault(); openReport(job.id); };
      report.append(a);
    }
    const after = cell(s.file_bytes_after, "num bytes-after");
    tr.append(first, cell(job.id), cell(model ? model.name : job.model_id), cell(ops(job)),
      cell(job.status, "status status-" + job.status), progress,
      cell(s.file_bytes_before, "num"), after, cell(fmt.num(s.compression_ratio, 2), "num"),
      cell(fmt.pct(s.sparsity_after), "num"),
      cell(fmt.pair(s.accuracy_before, s.accuracy_after, fmt.pct), "num"),
      cell(fmt.pair(s.perplexity_before, s.perplexity_after, (v) => fmt.num(v, 3)), "num"),
      cell(fmt.num(s.seconds, 2), "num"), report);
    body.append(tr);
  }
}

// The report needs the key, so it is fetched here and shown from a blob URL.
async function openReport(id) {
  try {
    const res = await api("/v1/jobs/" + id + "/report");
    const url = URL.createObjectURL(new Blob([await res.text()], { type: "text/html" }));
    window.open(url, "_blank");
  } catch (e) { showError(e); }
}

function showError(e) {
  $("error").textContent = String(e.message || e);
  $("error").classList.remove("hidden");
}

const ROWS = [
  ["pipeline", (j) => ops(j)],
  ["status", (j) => j.status],
  ["bytes after", (j) => summary(j).file_bytes_after],
  ["compression ratio", (j) => fmt.num(summary(j).compression_ratio, 2)],
  ["sparsity after", (j) => fmt.pct(summary(j).sparsity_after)],
  ["accuracy after", (j) => fmt.pct(summary(j).accuracy_after)],
  ["perplexity after", (j) => fmt.num(summary(j).perplexity_after, 3)],
  ["throughput speed-up", (j) => fmt.num(summary(j).batch_throughput_speedup, 2)],
  ["seconds", (j) => fmt.num(summary(j).seconds, 2)],
];

function renderComparison(ids) {
  const jobs = ids.map((id) => state.jobs.find((j) => j.id === id)).filter(Boolean);
  if (jobs.length < 2) { showError("choose two or more jobs to compare"); return; }
  const table = $("comparison-table");
  table.replaceChildren();
  const head = document.createElement("tr");
  head.append(cell("job"), ...jobs.map((j) => cell(j.id.slice(-12))));
  table.append(head);
  for (const [name, value] of ROWS) {
    const tr = document.createElement("tr");
    tr.append(cell(name), ...jobs.map((j) => cell(value(j), "num")));
    table.append(tr);
  }
  $("chart").replaceChildren(chart(jobs));
  $("comparison").classList.remove("hidden");
}

// Quality against size, one point per job: accuracy if every job measured it, else perplexity
// (lower is better), else sparsity, else the compression ratio (which every job has).
function chart(jobs) {
  const NS = "http://www.w3.org/2000/svg";
  const pick = ["accuracy_after", "perplexity_after", "sparsity_after"]
    .find((k) => jobs.every((j) => summary(j)[k] != null)) || "compression_ratio";
  const points = jobs.map((j) => ({ id: j.id, x: summary(j).file_bytes_after, y: summary(j)[pick] }))
    .filter((p) => p.x != null && p.y != null);
  const svg = document.createElementNS(NS, "svg");
  const W = 520, H = 300, P = 50;
  svg.setAttribute("width", W); svg.setAttribute("height", H); svg.setAttribute("id", "scatter");
  const span = (vs) => { const lo = Math.min(...vs), hi = Math.max(...vs); return [lo, hi > lo ? hi : lo + 1]; };
  const [x0, x1] = span(points.map((p) => p.x));
  const [y0, y1] = span(points.map((p) => p.y));
  const add = (tag, attrs, text) => {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text) el.textContent = text;
    svg.append(el);
  };
  add("line", { x1: P, y1: H - P, x2: W - 10, y2: H - P, stroke: "#6e7781" });
  add("line", { x1: P, y1: 10, x2: P, y2: H - P, stroke: "#6e7781" });
  add("text", { x: W / 2, y: H - 12 }, "file bytes after");
  add("text", { x: P + 8, y: 12 }, pick.replaceAll("_", " "));
  for (const p of points) {
    const cx = P + ((p.x - x0) / (x1 - x0)) * (W - P - 30);
    const cy = H - P - ((p.y - y0) / (y1 - y0)) * (H - P - 30);
    add("circle", { cx, cy, r: 5, fill: "#0550ae", "data-job": p.id });
    add("text", { x: cx + 7, y: cy - 7 }, p.id.slice(-6));
  }
  return svg;
}

async function refresh() {
  clearTimeout(state.timer);
  try {
    const models = await (await api("/v1/models?limit=100")).json();
    state.models = new Map(models.data.map((m) => [m.id, m]));
    const q = new URLSearchParams({ limit: "100" });
    if ($("status").value) q.set("status", $("status").value);
    if ($("model").value) q.set("model_id", $("model").value);
    state.jobs = (await (await api("/v1/jobs?" + q)).json()).data;
    const finished = state.jobs.filter((j) => j.status === "succeeded" && !state.details.has(j.id));
    await Promise.all(finished.map(async (j) => {
      state.details.set(j.id, await (await api("/v1/jobs/" + j.id)).json());
    }));
    renderModels();
    renderJobs();
    $("error").classList.add("hidden");
    $("updated").textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.loaded = "true";
  } catch (e) { showError(e); }
  const live = state.jobs.some((j) => j.status === "queued" || j.status === "running");
  state.timer = setTimeout(refresh, live ? 2000 : 10000);
}

$("key-form").onsubmit = (e) => {
  e.preventDefault();
  sessionStorage.setItem("compressd-key", $("key").value.trim());
  $("key").value = "";
  $("key-form").classList.add("hidden");
  refresh();
};
$("forget").onclick = () => { sessionStorage.removeItem("compressd-key"); location.reload(); };
$("status").onchange = refresh;
$("model").onchange = refresh;
$("compare-button").onclick = () => renderComparison([...state.selected]);

(async () => {
  await refresh();
  const compare = new URLSearchParams(location.search).get("compare");
  if (compare) {
    const ids = compare.split(",");
    ids.forEach((id) => state.selected.add(id));
    renderJobs();
    renderComparison(ids);
  }
})();
