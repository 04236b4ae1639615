// The live fleet page: one snapshot from /api/fleet, then updates over Server-Sent Events.
// Every value reaches the page through textContent: nothing a device sends becomes markup.
"use strict";

const COLORS = ["#3b6fd8", "#d33a2c", "#1f9d55", "#c77d00", "#8e24aa", "#00838f", "#6d4c41",
                "#546e7a"];
const devices = new Map();       // id -> {data, row}
let selected = null;
const feedRows = new Map();      // activation id -> row (of the selected device)
const pending = new Map();       // tx -> activation id
let chartTimer = null;
let picked = null;               // device ids the tester picked for the chart; null: the top ones
let offlineAfter = 0;            // seconds an offline device stays in the live view (0: always)
const lastState = new Map();     // id -> wall_time of the last state message applied
window.edgeStats = {updates: 0, applied: 0, latencies: []};

const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}

function ago(t) {
  if (!t) return "–";
  const s = Math.max(0, Date.now() / 1000 - t);
  if (s < 60) return `${s.toFixed(0)} s ago`;
  if (s < 3600) return `${(s / 60).toFixed(0)} min ago`;
  if (s < 86400) return `${(s / 3600).toFixed(1)} h ago`;
  return `${(s / 86400).toFixed(1)} d ago`;
}

function clock(t) {
  return new Date(t * 1000).toLocaleTimeString([], {hour12: false});
}

function duration(s) {
  if (s === undefined || s === null) return "–";
  if (s < 120) return `${s.toFixed(0)} s`;
  if (s < 7200) return `${(s / 60).toFixed(0)} min`;
  if (s < 172800) return `${(s / 3600).toFixed(1)} h`;
  return `${(s / 86400).toFixed(1)} d`;
}

function setCells(row, values) {
  values.forEach((v, i) => {
    const td = row.children[i];
    td.replaceChildren();
    if (v instanceof Node) td.appendChild(v); else td.textContent = v;
  });
}

// A device as a person knows it: its friendly name, with the pseudonymous id beside it.
function who(id, name) {
  const span = el("span", "who");
  if (name) span.appendChild(el("span", "name", name));
  span.appendChild(el("code", "id", id));
  return span;
}

function whoText(id, name) {
  return name ? `${name} (${id})` : id;
}

function deviceCell(d) {
  const cell = who(d.id, d.name);
  if (d.simulated) cell.appendChild(el("span", "chip sim", "simulated"));
  if (d.simulated && !d.online) cell.appendChild(removeButton(d));
  return cell;
}

function removeButton(d) {
  const b = el("button", "remove", "remove");
  b.type = "button";
  b.title = "remove this simulated device and its history from the dashboard";
  b.addEventListener("click", (ev) => {
    ev.stopPropagation();
    if (window.confirm(`Remove the simulated device ${whoText(d.id, d.name)} and its history?`)) {
      removeDevices({device: d.id});
    }
  });
  return b;
}

async function removeDevices(body) {
  const r = await fetch("/api/devices/remove", {
    method: "POST",
    headers: {"content-type": "application/json", "x-edge-dashboard": "1"},
    body: JSON.stringify(body),
  });
  const answer = await r.json();
  $("notice").textContent = r.ok ? `removed ${answer.removed.length} simulated device(s)` :
    (answer.error || r.statusText);
}

function forget(id) {
  const entry = devices.get(id);
  if (!entry) return;
  entry.row.remove();
  devices.delete(id);
  lastState.delete(id);
  if (selected === id) {
    selected = null;
    feedRows.clear();
    $("feed").tBodies[0].replaceChildren();
    $("feed-device").textContent = "";
    $("feed-empty").textContent = "Select a device to see its activations.";
  }
  $("no-devices").classList.toggle("hidden", devices.size > 0);
  showRemoveAll();
}

function showRemoveAll() {
  let n = 0;
  for (const e of devices.values()) if (e.data.simulated && !e.data.online) n += 1;
  $("remove-simulated").classList.toggle("hidden", n === 0);
  $("remove-simulated").textContent = `remove ${n} offline simulated device${n === 1 ? "" : "s"}`;
}

function renderDevice(d) {
  let entry = devices.get(d.id);
  if (!entry) {
    const row = el("tr", "device");
    row.id = `device-${d.id}`;
    for (let i = 0; i < 8; i++) row.appendChild(el("td"));
    row.addEventListener("click", () => select(d.id));
    insertSorted($("devices").tBodies[0], row, d.id);
    entry = {data: d, row};
    devices.set(d.id, entry);
  }
  entry.data = d;
  const s = d.state || {};
  const mode = d.online ? (s.mode || "unknown") : "–";
  const models = s.models ? Object.entries(s.models).map(([m, t]) => `${m} ${Number(t).toFixed(2)}`).join(", ") : "–";
  const modeChip = el("span", `chip mode ${d.online ? mode : ""}`, mode);
  if (s.error) modeChip.title = s.error;
  setCells(entry.row, [
    deviceCell(d),
    el("span", `chip status ${d.online ? "online" : "offline"}`, d.online ? "online" : "offline"),
    modeChip,
    models,
    s.false_per_hour !== undefined ? String(s.false_per_hour) : "–",
    s.rtf !== undefined && s.rtf !== null ? s.rtf.toFixed(3) : "–",
    s.last_activation ? `${ago(s.last_activation.wall_time)} (${s.last_activation.score.toFixed(2)})` : "–",
    duration(s.uptime_s),
  ]);
  entry.row.classList.toggle("selected", d.id === selected);
  entry.row.classList.toggle("simulated", Boolean(d.simulated));
  $("no-devices").classList.toggle("hidden", devices.size > 0);
  if (selected === null) select(d.id);
}

function insertSorted(tbody, row, key) {
  for (const r of tbody.rows) {
    if (r.id.slice(7) > key) { tbody.insertBefore(row, r); return; }
  }
  tbody.appendChild(row);
}

function renderTotals(t) {
  if (!t) return;
  for (const k of ["devices", "online", "listening", "recording", "muted", "error",
                   "activations", "false"]) {
    $(`t-${k}`).textContent = t[k];
  }
  $("t-rate").textContent = t.false_per_device_hour.toFixed(3);
  const hidden = t.aged_out || 0;
  $("aged-out").classList.toggle("hidden", hidden === 0);
  $("aged-out").textContent = `${hidden} device${hidden === 1 ? "" : "s"} offline for more ` +
    `than ${duration(offlineAfter)} not shown (their history is kept; a device is back ` +
    "as soon as it speaks).";
}

function renderIngest(c) {
  $("ingest").textContent = `${c.received} messages received, ${c.skipped} broken ones ` +
    `skipped, ${c.dropped} dropped`;
}

function labelCell(a) {
  if (a.label_status === "sent") return el("span", "label label-pending", `${a.label}…`);
  if (a.label_status === "error") return el("span", "label label-pending", "not saved");
  if (a.label === "true" || a.label === "false") {
    return el("span", `label label-${a.label}`, a.label === "true" ? "true ✓" : "false ✓");
  }
  return el("span", "label", a.likely_false ? "likely false" : "–");
}

function feedRow(a) {
  const row = el("tr", "activation");
  row.id = `act-${a.id}`;
  row.dataset.device = a.device;
  const buttons = el("td");
  for (const label of ["true", "false"]) {
    const b = el("button", `mark-${label}`, label);
    b.type = "button";
    b.addEventListener("click", (ev) => { ev.stopPropagation(); sendLabel(a, label, row); });
    buttons.appendChild(b);
  }
  const cells = [clock(a.wall_time), a.model, a.score.toFixed(2), a.reason];
  for (const c of cells) row.appendChild(el("td", "", c));
  const lc = el("td", "label-cell");
  lc.appendChild(labelCell(a));
  row.appendChild(lc);
  row.appendChild(buttons);
  return row;
}

function setLabel(row, a) {
  const lc = row.querySelector(".label-cell");
  lc.replaceChildren(labelCell(a));
}

async function sendLabel(a, label, row) {
  setLabel(row, {...a, label, label_status: "sent"});
  try {
    const r = await fetch("/api/label", {
      method: "POST",
      headers: {"content-type": "application/json", "x-edge-dashboard": "1"},
      body: JSON.stringify({device: a.device, activation: a.id, label}),
    });
    const body = await r.json();
    if (!r.ok) throw new Error(body.error || r.statusText);
    pending.set(body.tx, a.id);
  } catch (e) {
    setLabel(row, {...a, label, label_status: "error"});
  }
}

async function select(id) {
  selected = id;
  for (const [did, e] of devices) e.row.classList.toggle("selected", did === id);
  const entry = devices.get(id);
  $("feed-device").textContent = `of ${whoText(id, entry ? entry.data.name : null)}`;
  const r = await fetch(`/api/devices/${encodeURIComponent(id)}/activations?limit=100`);
  if (!r.ok || selected !== id) return;
  const list = await r.json();
  const tbody = $("feed").tBodies[0];
  tbody.replaceChildren();
  feedRows.clear();
  for (const a of list) {
    const row = feedRow(a);
    feedRows.set(a.id, row);
    tbody.appendChild(row);
  }
  $("feed-empty").textContent = list.length ? "" : "No activation yet.";
}

function addActivation(a) {
  if (selected === null) { select(a.device); return; }
  if (a.device !== selected || feedRows.has(a.id)) return;
  const row = feedRow(a);
  row.classList.add("fresh");
  feedRows.set(a.id, row);
  $("feed").tBodies[0].prepend(row);
  $("feed-empty").textContent = "";
}

function applyLabel(l) {
  if (l.tx) pending.delete(l.tx);
  if (l.device !== selected) return;
  const row = feedRows.get(l.activation);
  if (row) setLabel(row, {label: l.label, label_status: l.status === "ok" ? "ok" : "error"});
}

function apply(u) {
  const stats = window.edgeStats;
  stats.updates += 1;
  const now = Date.now() / 1000;
  for (const d of u.devices || []) {
    renderDevice(d);
    if (d.state && d.state.wall_time && d.state.wall_time !== lastState.get(d.id)) {
      lastState.set(d.id, d.state.wall_time);  // a new state message, not a re-sent one
      stats.latencies.push(now - d.state.wall_time);
      if (stats.latencies.length > 20000) stats.latencies.splice(0, 10000);
    }
    stats.applied += 1;
  }
  if (u.devices) showRemoveAll();
  for (const id of u.gone || []) forget(id);
  for (const a of u.activations || []) addActivation(a);
  for (const l of u.labels || []) applyLabel(l);
  renderTotals(u.totals);
  if (u.ingest) renderIngest(u.ingest);
  if ((u.activations && u.activations.length) || (u.labels && u.labels.length) || u.removed) {
    scheduleChart();
  }
}

function scheduleChart() {
  if (chartTimer) return;
  chartTimer = setTimeout(() => { chartTimer = null; loadChart(); }, 1500);
}

async function loadChart() {
  const query = picked === null ? "" : `&devices=${picked.map(encodeURIComponent).join(",")}`;
  const r = await fetch(`/api/chart?hours=24${query}`);
  if (!r.ok) return;
  const c = await r.json();
  drawChart(c);
  describeChart(c);
  renderChoices(c);
}

// The chart says what it draws: the top devices (and how many had any), or the ones picked.
function describeChart(c) {
  let what;
  if (c.shown === "picked") {
    what = `The ${c.series.length} device${c.series.length === 1 ? "" : "s"} you picked, ` +
      "and the fleet mean per device.";
  } else if (c.with_false === 0) {
    what = "No false activation in the last 24 h; the line is the fleet mean per device.";
  } else if (c.with_false <= c.top) {
    what = `Every device with a false activation in the last 24 h (${c.with_false}), ` +
      "and the fleet mean per device.";
  } else {
    what = `The ${c.top} devices with the most false activations in the last 24 h, of ` +
      `${c.with_false} that had any, and the fleet mean per device. Pick devices to see others.`;
  }
  $("chart-caption").textContent = what;
}

function renderChoices(c) {
  const box = $("choices");
  box.replaceChildren();
  const chosen = new Set(picked || []);
  for (const ch of c.choices) {
    const label = el("label", "choice");
    const box1 = el("input");
    box1.type = "checkbox";
    box1.value = ch.device;
    box1.checked = chosen.has(ch.device);
    box1.disabled = !box1.checked && chosen.size >= c.top;
    box1.addEventListener("change", () => {
      const now = [...box.querySelectorAll("input:checked")].map((i) => i.value);
      picked = now.length ? now : null;
      loadChart();
    });
    label.id = `pick-${ch.device}`;
    label.appendChild(box1);
    label.appendChild(who(ch.device, ch.name));
    label.appendChild(el("span", "count", `${ch.false} false`));
    box.appendChild(label);
  }
  $("chart-top").disabled = picked === null;
  $("pick-count").textContent = picked === null ? `pick up to ${c.top} devices` :
    `${picked.length} of ${c.top} picked`;
}

function svg(tag, attrs, text) {
  const e = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function drawChart(c) {
  const s = $("chart");
  s.replaceChildren();
  const W = 960, H = 220, L = 40, R = 10, T = 10, B = 28;
  const n = c.hours.length;
  let max = 1;
  for (const ser of c.series) for (const v of ser.values) max = Math.max(max, v);
  for (const v of c.fleet_mean) max = Math.max(max, v);
  const x = (i) => L + (W - L - R) * (n <= 1 ? 0 : i / (n - 1));
  const y = (v) => H - B - (H - T - B) * v / max;
  for (let k = 0; k <= 4; k++) {
    const v = max * k / 4;
    s.appendChild(svg("line", {x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "#e3e6ec"}));
    s.appendChild(svg("text", {x: L - 6, y: y(v) + 4, "text-anchor": "end"},
                      Number.isInteger(v) ? String(v) : v.toFixed(2)));
  }
  for (let i = 0; i < n; i += Math.max(1, Math.floor(n / 8))) {
    s.appendChild(svg("text", {x: x(i), y: H - 8, "text-anchor": "middle"},
                      new Date(c.hours[i] * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", hour12: false})));
  }
  const legend = $("legend");
  legend.replaceChildren();
  const line = (values, color, name, dash) => {
    const pts = values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(" ");
    const attrs = {points: pts, fill: "none", stroke: color, "stroke-width": 2};
    if (dash) attrs["stroke-dasharray"] = "5 4";
    s.appendChild(svg("polyline", attrs));
    const item = el("span", "", name);
    const swatch = el("i");
    swatch.style.background = color;
    item.prepend(swatch);
    legend.appendChild(item);
  };
  c.series.forEach((ser, i) => line(ser.values, COLORS[i % COLORS.length],
                                    whoText(ser.device, ser.name), false));
  line(c.fleet_mean, "#232a3b", "fleet mean per device", true);
}

async function load() {
  const r = await fetch("/api/fleet");
  if (!r.ok) return;
  const f = await r.json();
  offlineAfter = f.offline_after_s;
  const live = new Set(f.devices.map((d) => d.id));
  for (const id of [...devices.keys()]) if (!live.has(id)) forget(id);  // aged out meanwhile
  for (const d of f.devices) renderDevice(d);
  showRemoveAll();
  renderTotals(f.totals);
  renderIngest(f.ingest);
  if (selected !== null) select(selected);
  loadChart();
}

function connect() {
  const es = new EventSource("/events");
  es.onopen = () => { $("conn").textContent = "live"; $("conn").classList.remove("off"); load(); };
  es.onerror = () => { $("conn").textContent = "reconnecting…"; $("conn").classList.add("off"); };
  es.onmessage = (ev) => {
    const u = JSON.parse(ev.data);
    if (u.resync) { load(); return; }
    apply(u);
  };
}

setInterval(() => { for (const e of devices.values()) renderDevice(e.data); }, 30000);
$("chart-top").addEventListener("click", () => { picked = null; loadChart(); });
$("remove-simulated").addEventListener("click", () => {
  if (window.confirm("Remove every offline simulated device and its history?")) {
    removeDevices({simulated: "offline"});
  }
});
connect();
