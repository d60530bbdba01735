// edge-detect dashboard: live tiles (polled snapshots), counters and events from the /api/v1/feed
// server-sent events, a status strip, and an editor that draws lines and zones on a camera's snapshot.
// Plain JS, no build step. Every value from the API is inserted as text (never as HTML).
"use strict";

const API = "/api/v1";
const TILE_INTERVAL_MS = 100;     // tile refresh; the server encodes at most server.stream_fps per source
const MAX_EVENTS = 100;
// events listed on the page (object_new / object_update / object_end: GET /api/v1/events?type=...)
const LISTED_EVENTS = new Set(["line_cross", "zone_enter", "zone_exit", "dwell", "clip_saved"]);
const state = { sources: {}, counts: { sources: {} }, token: null, feed: null };

// ---------------------------------------------------------------------------------------------- helpers

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function toast(message, kind = "error") {
  const box = document.getElementById("toast");
  box.textContent = message;
  box.className = kind === "error" ? "" : kind;
  box.hidden = false;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { box.hidden = true; }, 6000);
}

function fmt(value, digits = 1) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

function cssId(id) { return CSS.escape(id); }

// ---------------------------------------------------------------------------------------------- API

function loadToken() {
  const match = location.hash.match(/token=([^&]+)/);
  if (match) {
    sessionStorage.setItem("edgeDetectToken", decodeURIComponent(match[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  state.token = sessionStorage.getItem("edgeDetectToken");
}

async function api(method, path, body) {
  const headers = {};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && state.token) headers["Authorization"] = "Bearer " + state.token;
  const response = await fetch(API + path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  if (response.status === 204) return null;
  const data = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401 || response.status === 403) openTokenDialog();
    throw new Error(`${method} ${path}: ${response.status} ${data.detail || response.statusText}`);
  }
  return data;
}

// ---------------------------------------------------------------------------------------------- tiles

function ensureTile(source) {
  const grid = document.getElementById("grid");
  let tile = grid.querySelector(`.tile[data-source="${cssId(source.id)}"]`);
  if (tile) return tile;
  const img = el("img", { class: "live", "data-source": source.id, alt: `camera ${source.id}` });
  tile = el("div", { class: "tile", "data-source": source.id }, [
    el("div", { class: "tile-head" }, [
      el("span", { class: "name", text: source.id, title: source.uri || "" }),
      el("span", { class: "state", text: source.state || "…" }),
      el("button", { type: "button", class: "edit", text: "Draw", title: "draw a line or a zone",
                     onclick: () => openEditor(source.id) }),
      el("button", { type: "button", class: "remove", text: "✕", title: "remove this camera",
                     onclick: () => removeSource(source.id) }),
    ]),
    img,
    el("div", { class: "tile-stats" }),
    el("ul", { class: "counters", "data-source": source.id }),
  ]);
  grid.append(tile);
  pollImage(img, source.id);
  renderCounters(source.id);
  return tile;
}

function pollImage(img, id) {
  const next = () => {
    if (!img.isConnected) return;
    img.src = `${API}/sources/${encodeURIComponent(id)}/snapshot.jpg?max_width=640&t=${Date.now()}`;
  };
  img.addEventListener("load", () => {
    img.dataset.frames = String(Number(img.dataset.frames || 0) + 1);
    setTimeout(next, TILE_INTERVAL_MS);
  });
  img.addEventListener("error", () => setTimeout(next, 1000));
  next();
}

function syncTiles(sources) {
  const ids = new Set(sources.map((s) => s.id));
  for (const tile of document.querySelectorAll("#grid .tile")) {
    if (!ids.has(tile.dataset.source)) { tile.remove(); delete state.sources[tile.dataset.source]; }
  }
  for (const source of sources) {
    state.sources[source.id] = { ...(state.sources[source.id] || {}), ...source };
    const tile = ensureTile(source);
    const badge = tile.querySelector(".state");
    badge.textContent = source.state || "…";
    badge.className = "state " + (source.state || "");
    tile.querySelector(".tile-stats").textContent =
      `in ${fmt(source.fps_in)} / out ${fmt(source.fps_out)} fps · processed ${source.processed ?? "–"} · ` +
      `dropped ${source.dropped ?? "–"} · reconnects ${source.reconnects ?? "–"} · age ${fmt(source.last_frame_age_s, 2)} s`;
  }
}

function counterItem(kind, name, values) {
  const num = (field) => el("span", { class: "num", "data-field": field, text: String(values[field] ?? 0) });
  const parts = kind === "line"
    ? [el("b", { text: name }), " in ", num("in"), " out ", num("out")]
    : [el("b", { text: name }), " inside ", num("occupancy"), " · entered ", num("entered"), " · exited ", num("exited")];
  return el("li", { class: kind, "data-kind": kind, "data-name": name }, parts);
}

function renderCounters(id) {
  const list = document.querySelector(`.counters[data-source="${cssId(id)}"]`);
  if (!list) return;
  const counts = state.counts.sources[id] || {};
  const items = [];
  for (const [name, v] of Object.entries(counts.lines || {})) items.push(["line", name, v]);
  for (const [name, v] of Object.entries(counts.zones || {})) items.push(["zone", name, v]);
  const key = items.map(([k, n]) => k + ":" + n).join("|");
  if (list.dataset.key !== key) {
    list.replaceChildren(...items.map(([k, n, v]) => counterItem(k, n, v)));
    list.dataset.key = key;
    return;
  }
  for (const [kind, name, values] of items) {
    const item = list.querySelector(`li[data-kind="${kind}"][data-name="${cssId(name)}"]`);
    for (const span of item.querySelectorAll(".num")) span.textContent = String(values[span.dataset.field] ?? 0);
  }
}

// ---------------------------------------------------------------------------------------------- feed

function renderStatus(status) {
  syncTiles(status.sources || []);
  const strip = document.getElementById("status-strip");
  const item = (label, value) => el("span", {}, [label + " ", el("b", { text: String(value) })]);
  const model = item("model", String(status.model ?? "–").split("/").pop());
  model.title = status.model ?? "";
  const parts = [model, item("device", status.device ?? "–"),
                 item("uptime", `${fmt(status.uptime_s, 0)} s`)];
  for (const [stage, ms] of Object.entries(status.stages_ms || {})) parts.push(item(stage, `${fmt(ms, 1)} ms`));
  const dropped = (status.sources || []).reduce((n, s) => n + (s.dropped || 0), 0);
  parts.push(item("dropped", dropped));
  strip.replaceChildren(...parts);
}

function eventText(e) {
  const what = e.type === "line_cross" ? `${e.line} ${e.direction}`
    : e.zone ? `${e.zone}${e.dwell_s !== undefined ? ` ${fmt(e.dwell_s)} s` : ""}` : "";
  const who = e.track_id !== undefined ? ` #${e.track_id} ${e.class_name || ""}` : "";
  return `${e.source} · ${e.type} ${what}${who}`;
}

function addEvents(events) {
  const list = document.getElementById("events");
  for (const e of events) {
    if (!LISTED_EVENTS.has(e.type) || list.querySelector(`li[data-id="${cssId(e.id)}"]`)) continue;
    const when = new Date((e.wall_time || 0) * 1000).toLocaleTimeString();
    const body = el("div", {}, [el("div", { class: "when", text: when }), el("div", { text: eventText(e) })]);
    if (e.clip_url) body.append(el("a", { href: e.clip_url, target: "_blank", text: "clip" }));
    const thumb = e.snapshot_url ? [el("img", { src: e.snapshot_url, alt: "", loading: "lazy" })] : [];
    list.prepend(el("li", { "data-id": e.id, "data-type": e.type, "data-source": e.source }, [...thumb, body]));
  }
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
}

function connectFeed() {
  const conn = document.getElementById("conn");
  const feed = new EventSource(`${API}/feed`);
  state.feed = feed;
  feed.addEventListener("open", () => { conn.textContent = "live"; conn.className = "conn on"; });
  feed.addEventListener("error", () => { conn.textContent = "reconnecting"; conn.className = "conn off"; });
  feed.addEventListener("status", (m) => renderStatus(JSON.parse(m.data)));
  feed.addEventListener("events", (m) => addEvents(JSON.parse(m.data)));
  feed.addEventListener("counts", (m) => {
    state.counts = JSON.parse(m.data);
    for (const id of Object.keys(state.sources)) renderCounters(id);
  });
}

// ---------------------------------------------------------------------------------------------- sources

async function removeSource(id) {
  if (!confirm(`Remove camera ${id}?`)) return;
  try {
    await api("DELETE", `/sources/${encodeURIComponent(id)}`);
    syncTiles(Object.values(state.sources).filter((s) => s.id !== id));
  } catch (err) { toast(err.message); }
}

async function addSource() {
  const uri = document.getElementById("add-uri").value.trim();
  const id = document.getElementById("add-id").value.trim();
  try {
    const source = await api("POST", "/sources", id ? { uri, id } : { uri });
    document.getElementById("add-dialog").close();
    syncTiles([...Object.values(state.sources), source]);
  } catch (err) { toast(err.message); }
}

function openTokenDialog() {
  const dialog = document.getElementById("token-dialog");
  if (!dialog.open) dialog.showModal();
}

// ---------------------------------------------------------------------------------------------- editor

const editor = { id: null, image: null, regions: { lines: {}, zones: {} }, points: [], drag: null };

function editorMode() { return document.querySelector('input[name="mode"]:checked').value; }

function uniqueName(prefix, taken) {
  for (let i = 1; ; i++) if (!(prefix + i in taken)) return prefix + i;
}

async function openEditor(id) {
  editor.id = id;
  editor.points = [];
  editor.drag = null;
  const source = await api("GET", `/sources/${encodeURIComponent(id)}`).catch((err) => { toast(err.message); return null; });
  if (!source) return;
  editor.regions = { lines: source.lines || {}, zones: source.zones || {} };
  const image = new Image();
  image.addEventListener("load", () => {
    editor.image = image;
    const canvas = document.getElementById("editor-canvas");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    fitCanvas(canvas);
    canvas.dataset.ready = "1";
    drawEditor();
  });
  document.getElementById("editor-canvas").dataset.ready = "";
  document.getElementById("editor-title").textContent = `Draw on ${id}`;
  suggestName();
  renderRegionList();
  document.getElementById("editor").showModal();
  image.src = `${API}/sources/${encodeURIComponent(id)}/snapshot.jpg?raw=1&t=${Date.now()}`;
}

function fitCanvas(canvas) {
  // as large as the dialog allows, the whole picture visible, pixels square
  const room = canvas.parentElement.clientWidth || canvas.width;
  const scale = Math.min(room / canvas.width, (0.7 * window.innerHeight) / canvas.height);
  canvas.style.width = `${Math.floor(canvas.width * scale)}px`;
  canvas.style.height = `${Math.floor(canvas.height * scale)}px`;
}

function suggestName() {
  const mode = editorMode();
  const taken = mode === "line" ? editor.regions.lines : editor.regions.zones;
  document.getElementById("region-name").value = uniqueName(mode, taken);
  document.getElementById("editor-hint").textContent = mode === "line"
    ? "drag from the first end to the second (direction: 'in' = from its left to its right)"
    : "click the corners; click the first corner again (or double-click) to close";
}

function canvasPoint(event) {
  const canvas = event.target;
  const rect = canvas.getBoundingClientRect();
  return [Math.round((event.clientX - rect.left) * canvas.width / rect.width),
          Math.round((event.clientY - rect.top) * canvas.height / rect.height)];
}

function pairs(flat) {
  const out = [];
  for (let i = 0; i + 1 < flat.length; i += 2) out.push([flat[i], flat[i + 1]]);
  return out;
}

function drawPath(ctx, points, close, color, width) {
  if (!points.length) return;
  ctx.strokeStyle = color;
  ctx.lineWidth = width;
  ctx.beginPath();
  ctx.moveTo(points[0][0], points[0][1]);
  for (const p of points.slice(1)) ctx.lineTo(p[0], p[1]);
  if (close) ctx.closePath();
  ctx.stroke();
}

function drawEditor() {
  const canvas = document.getElementById("editor-canvas");
  const ctx = canvas.getContext("2d");
  const width = Math.max(2, canvas.width / 320);
  if (editor.image) ctx.drawImage(editor.image, 0, 0);
  for (const v of Object.values(editor.regions.lines)) drawPath(ctx, pairs(v.xyxy), false, "#e066e0", width);
  for (const v of Object.values(editor.regions.zones)) drawPath(ctx, pairs(v.polygon), true, "#44d6d6", width);
  const pending = editor.drag ? [editor.drag.start, editor.drag.end] : editor.points;
  drawPath(ctx, pending, false, "#ffd23f", width * 1.5);
}

function onEditorDown(event) {
  const p = canvasPoint(event);
  if (editorMode() === "line") {
    editor.drag = { start: p, end: p };
    editor.points = [];
  } else {
    const first = editor.points[0];
    if (first && editor.points.length >= 3 && Math.hypot(first[0] - p[0], first[1] - p[1]) < 10) {
      editor.points.push(first);
    } else {
      editor.points.push(p);
    }
  }
  drawEditor();
}

function onEditorMove(event) {
  if (!editor.drag) return;
  editor.drag.end = canvasPoint(event);
  drawEditor();
}

function onEditorUp() {
  if (!editor.drag) return;
  const { start, end } = editor.drag;
  editor.drag = null;
  editor.points = Math.hypot(end[0] - start[0], end[1] - start[1]) >= 3 ? [start, end] : [];
  drawEditor();
}

function pendingRegion() {
  const pts = editor.points.slice();
  if (editorMode() === "line") return pts.length === 2 ? { kind: "lines", value: { xyxy: pts.flat() } } : null;
  if (pts.length > 3 && pts[0] === pts[pts.length - 1]) pts.pop();
  return pts.length >= 3 ? { kind: "zones", value: { polygon: pts.flat() } } : null;
}

async function saveRegions(regions, message) {
  try {
    const source = await api("PATCH", `/sources/${encodeURIComponent(editor.id)}`,
                             { lines: regions.lines, zones: regions.zones });
    editor.regions = { lines: source.lines || {}, zones: source.zones || {} };
    editor.points = [];
    toast(message, "info");
    renderRegionList();
    suggestName();
    drawEditor();
    return true;
  } catch (err) { toast(err.message); return false; }
}

async function saveEditor() {
  const region = pendingRegion();
  const name = document.getElementById("region-name").value.trim();
  if (!region) { toast(editorMode() === "line" ? "draw a line first (drag on the picture)" : "draw at least 3 corners"); return; }
  const regions = { lines: { ...editor.regions.lines }, zones: { ...editor.regions.zones } };
  regions[region.kind][name] = region.value;
  if (await saveRegions(regions, `saved ${region.kind.slice(0, -1)} ${name} on ${editor.id}`)) {
    document.getElementById("editor").close();
  }
}

function renderRegionList() {
  const list = document.getElementById("region-list");
  const items = [];
  for (const kind of ["lines", "zones"]) {
    for (const name of Object.keys(editor.regions[kind])) {
      const drop = () => {
        const regions = { lines: { ...editor.regions.lines }, zones: { ...editor.regions.zones } };
        delete regions[kind][name];
        saveRegions(regions, `removed ${name}`);
      };
      items.push(el("li", {}, [`${kind.slice(0, -1)} ${name} `, el("button", { type: "button", text: "✕", onclick: drop })]));
    }
  }
  list.replaceChildren(...items);
}

// ---------------------------------------------------------------------------------------------- start

function wire() {
  const canvas = document.getElementById("editor-canvas");
  canvas.addEventListener("mousedown", onEditorDown);
  canvas.addEventListener("mousemove", onEditorMove);
  canvas.addEventListener("mouseup", onEditorUp);
  canvas.addEventListener("dblclick", () => { if (editor.points.length >= 3) editor.points.push(editor.points[0]); });
  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => { editor.points = []; suggestName(); drawEditor(); });
  }
  document.getElementById("editor-undo").addEventListener("click", () => { editor.points.pop(); drawEditor(); });
  document.getElementById("editor-save").addEventListener("click", saveEditor);
  document.getElementById("editor-cancel").addEventListener("click", () => document.getElementById("editor").close());
  document.getElementById("add-source-btn").addEventListener("click", () => document.getElementById("add-dialog").showModal());
  document.getElementById("add-ok").addEventListener("click", addSource);
  document.getElementById("add-cancel").addEventListener("click", () => document.getElementById("add-dialog").close());
  document.getElementById("token-btn").addEventListener("click", openTokenDialog);
  document.getElementById("token-ok").addEventListener("click", () => {
    state.token = document.getElementById("token-input").value.trim();
    sessionStorage.setItem("edgeDetectToken", state.token);
    document.getElementById("token-dialog").close();
  });
  document.getElementById("token-cancel").addEventListener("click", () => document.getElementById("token-dialog").close());
}

async function main() {
  loadToken();
  wire();
  try {
    const { sources } = await api("GET", "/sources");
    syncTiles(sources);
  } catch (err) { toast(err.message); }
  connectFeed();
}

main();
