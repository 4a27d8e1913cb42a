// citybrain control-centre console: plain JS, no dependencies, no CDN.
"use strict";

const params = new URLSearchParams(location.search);
const token = params.get("token") || localStorage.getItem("citybrain.token") || "";
if (params.get("token")) localStorage.setItem("citybrain.token", token);
const authHeaders = token ? { Authorization: "Bearer " + token } : {};
const $ = (id) => document.getElementById(id);
const svgNS = "http://www.w3.org/2000/svg";
const state = { segments: {}, incidents: {}, recs: {}, faults: {}, summaries: [], paths: {}, net: null, selected: null, tiles: null };
// data age: wall seconds since a segment's newest reading arrived (server clock); stale segments are greyed out
const feed = { staleAfterS: 90, clockOffsetMs: 0, live: false };
const serverNow = () => Date.now() + feed.clockOffsetMs;
const dataAgeS = (rec) => (rec && rec.last_arrival_at ? Math.max(0, (serverNow() - Date.parse(rec.last_arrival_at)) / 1000) : null);
let view = { x: 0, y: 0, w: 1, h: 1 }, home = null;

$("operator").value = localStorage.getItem("citybrain.operator") || "";
$("operator").addEventListener("change", (e) => localStorage.setItem("citybrain.operator", e.target.value));

async function api(path, opts = {}) {
  const r = await fetch(path, { ...opts, headers: { ...authHeaders, ...(opts.headers || {}) } });
  if (!r.ok) {
    const reason = await r.json().then((b) => b.error, () => "");
    throw new Error(path + ": HTTP " + r.status + (reason ? " — " + reason : ""));
  }
  return r.json();
}

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function seconds(s) {
  return s < 90 ? Math.round(s) + " s" : s < 5400 ? Math.round(s / 60) + " min" : Math.round(s / 3600) + " h";
}

function age(ts) {
  if (!ts) return "";
  return seconds(Math.max(0, (Date.now() - Date.parse(ts)) / 1000));
}

// ---- map ------------------------------------------------------------------------------------------
const R_MERC = 6378137, HALF = Math.PI * R_MERC; // Web Mercator (EPSG:3857) metres, the tile grid's plane

function mercator(net) {
  // with a base map: every segment in Web Mercator metres (y up), or null when the network has no lon/lat
  if (!net.segments.every((s) => (s.geometry_lonlat || []).length >= 2)) return null;
  return (s) => s.geometry_lonlat.map(([lon, lat]) => [
    (lon * Math.PI / 180) * R_MERC, Math.log(Math.tan(Math.PI / 4 + (lat * Math.PI / 180) / 2)) * R_MERC]);
}

function project(net) {
  // local metres when present, else an equirectangular projection of lon/lat (metres, y up)
  const geo = net.segments.some((s) => !s.geometry_xy_m && s.geometry_lonlat);
  if (!geo) return (s) => s.geometry_xy_m || [];
  const pts = net.segments.flatMap((s) => s.geometry_lonlat || []);
  const lat0 = pts.reduce((a, p) => a + p[1], 0) / pts.length;
  const k = Math.cos((lat0 * Math.PI) / 180) * 111320;
  return (s) => (s.geometry_lonlat || []).map(([lon, lat]) => [lon * k, lat * 110540]);
}

function offsetLine(pts, d) {
  // shift a polyline d metres to the right of its direction, so both directions of a road show
  const out = [];
  for (let i = 0; i < pts.length; i++) {
    const a = pts[Math.max(0, i - 1)], b = pts[Math.min(pts.length - 1, i + 1)];
    const dx = b[0] - a[0], dy = b[1] - a[1], n = Math.hypot(dx, dy) || 1;
    out.push([pts[i][0] + (dy / n) * d, pts[i][1] - (dx / n) * d]);
  }
  return out;
}

function drawNetwork(net) {
  const svg = $("map");
  svg.innerHTML = "";
  // the base map only when configured and the network is geo-referenced; otherwise no request leaves the page
  const merc = state.tiles ? mercator(net) : null;
  const geom = merc || project(net);
  if (merc) {
    const tg = document.createElementNS(svgNS, "g");
    tg.id = "tiles";
    svg.appendChild(tg);
    const a = $("attribution");
    a.textContent = state.tiles.attribution || "";
    a.hidden = !state.tiles.attribution;
  } else if (state.tiles) {
    console.warn("base map configured but the network has no lon/lat: drawn without tiles");
  }
  let xs = [], ys = [];
  const lines = net.segments.map((s) => {
    const pts = geom(s);
    pts.forEach((p) => { xs.push(p[0]); ys.push(p[1]); });
    return [s, pts];
  });
  const minX = Math.min(...xs), maxX = Math.max(...xs), minY = Math.min(...ys), maxY = Math.max(...ys);
  const span = Math.max(maxX - minX, maxY - minY, 1), off = span * 0.006;
  const g = document.createElementNS(svgNS, "g");
  g.setAttribute("transform", `scale(1,-1)`); // y north up
  for (const [s, pts] of lines) {
    if (pts.length < 2) continue;
    const p = document.createElementNS(svgNS, "path");
    const o = offsetLine(pts, off);
    p.setAttribute("d", "M" + o.map((q) => q[0].toFixed(1) + " " + q[1].toFixed(1)).join(" L"));
    p.setAttribute("class", "seg los-none");
    p.style.stroke = "var(--c)";
    p.dataset.segment = s.segment_id;
    p.dataset.los = "none";
    p.addEventListener("click", (e) => { e.stopPropagation(); select(s.segment_id); });
    p.appendChild(document.createElementNS(svgNS, "title")).textContent = s.segment_id;
    g.appendChild(p);
    state.paths[s.segment_id] = { el: p, seg: s, mid: o[Math.floor(o.length / 2)] };
  }
  svg.appendChild(g);
  const incG = document.createElementNS(svgNS, "g");
  incG.id = "incident-marks";
  incG.setAttribute("transform", `scale(1,-1)`);
  svg.appendChild(incG);
  const pad = span * 0.04;
  home = { x: minX - pad, y: -maxY - pad, w: maxX - minX + 2 * pad, h: maxY - minY + 2 * pad };
  setView(home);
}

function setView(v) {
  view = { ...v };
  $("map").setAttribute("viewBox", `${view.x} ${view.y} ${view.w} ${view.h}`);
  scheduleTiles();
}

let tilesPending = false;
function scheduleTiles() {
  if (tilesPending || !$("tiles")) return;
  tilesPending = true;
  requestAnimationFrame(() => { tilesPending = false; drawTiles(); });
}

function drawTiles() {
  // XYZ raster tiles under the segments: map x = Mercator x, map y = -Mercator y (the SVG's y runs down)
  const tg = $("tiles"), svg = $("map");
  if (!tg) return;
  const r = svg.getBoundingClientRect();
  if (!r.width || !r.height) return;
  const k = Math.min(r.width / view.w, r.height / view.h); // px per map metre (viewBox "meet")
  const vw = r.width / k, vh = r.height / k, x0 = view.x - (vw - view.w) / 2, y0 = view.y - (vh - view.h) / 2;
  const maxZ = Math.max(0, Math.min(24, Number(state.tiles.max_zoom ?? 19)));
  const z = Math.max(0, Math.min(maxZ, Math.round(Math.log2((2 * HALF * k) / 256))));
  const n = 2 ** z, size = (2 * HALF) / n;
  const clamp = (i) => Math.max(0, Math.min(n - 1, i));
  const tx0 = clamp(Math.floor((x0 + HALF) / size)), tx1 = clamp(Math.floor((x0 + vw + HALF) / size));
  const ty0 = clamp(Math.floor((y0 + HALF) / size)), ty1 = clamp(Math.floor((y0 + vh + HALF) / size));
  if ((tx1 - tx0 + 1) * (ty1 - ty0 + 1) > 150) return; // never flood the tile server
  const want = new Set();
  for (let tx = tx0; tx <= tx1; tx++) {
    for (let ty = ty0; ty <= ty1; ty++) {
      const key = `${z}/${tx}/${ty}`;
      want.add(key);
      if (tg.querySelector(`image[data-tile="${key}"]`)) continue;
      const img = document.createElementNS(svgNS, "image");
      img.setAttribute("href", state.tiles.url.replace("{z}", z).replace("{x}", tx).replace("{y}", ty));
      img.setAttribute("x", -HALF + tx * size); img.setAttribute("y", -HALF + ty * size);
      // a hair wider so no seams show between neighbours
      img.setAttribute("width", size * 1.002); img.setAttribute("height", size * 1.002);
      img.setAttribute("preserveAspectRatio", "none");
      img.dataset.tile = key;
      tg.appendChild(img);
    }
  }
  for (const img of [...tg.querySelectorAll("image")]) if (!want.has(img.dataset.tile)) img.remove();
}

function enableZoomPan() {
  const svg = $("map");
  svg.addEventListener("wheel", (e) => {
    e.preventDefault();
    const r = svg.getBoundingClientRect(), f = e.deltaY > 0 ? 1.2 : 1 / 1.2;
    const mx = view.x + ((e.clientX - r.left) / r.width) * view.w, my = view.y + ((e.clientY - r.top) / r.height) * view.h;
    setView({ x: mx - (mx - view.x) * f, y: my - (my - view.y) * f, w: view.w * f, h: view.h * f });
  }, { passive: false });
  let drag = null;
  svg.addEventListener("mousedown", (e) => { drag = { x: e.clientX, y: e.clientY, v: { ...view } }; svg.classList.add("dragging"); });
  window.addEventListener("mouseup", () => { drag = null; svg.classList.remove("dragging"); });
  window.addEventListener("mousemove", (e) => {
    if (!drag) return;
    const r = svg.getBoundingClientRect();
    setView({ ...drag.v, x: drag.v.x - ((e.clientX - drag.x) / r.width) * drag.v.w, y: drag.v.y - ((e.clientY - drag.y) / r.height) * drag.v.h });
  });
  svg.addEventListener("click", () => { $("detail").hidden = true; state.selected = null; document.querySelectorAll("path.selected").forEach((p) => p.classList.remove("selected")); });
  $("fit").addEventListener("click", () => home && setView(home));
  window.addEventListener("resize", scheduleTiles);
}

function paintSegment(rec) {
  state.segments[rec.segment_id] = rec;
  const p = state.paths[rec.segment_id];
  if (!p) return;
  const los = rec.los || "none";
  const a = dataAgeS(rec), stale = a == null || a >= feed.staleAfterS;
  p.el.setAttribute("class", "seg los-" + (stale ? "none stale" : los) + (state.selected === rec.segment_id ? " selected" : ""));
  p.el.dataset.los = los;
  p.el.dataset.stale = stale ? "1" : "0";
  p.el.dataset.congested = rec.congested ? "1" : "0";
  if (state.selected === rec.segment_id) showDetail(rec.segment_id);
}

function select(id) {
  document.querySelectorAll("path.selected").forEach((p) => p.classList.remove("selected"));
  state.selected = id;
  state.paths[id]?.el.classList.add("selected");
  showDetail(id);
}

function showDetail(id) {
  const s = state.segments[id] || {}, seg = state.paths[id]?.seg || {};
  const rows = [
    ["level of service", s.los ?? "–"], ["speed", s.speed_kmh != null ? s.speed_kmh.toFixed(1) + " km/h" : "–"],
    ["flow", s.flow_veh_h != null ? Math.round(s.flow_veh_h) + " veh/h" : "–"], ["occupancy", s.occupancy != null ? (100 * s.occupancy).toFixed(1) + " %" : "–"],
    ["density", s.density_veh_km != null ? s.density_veh_km.toFixed(1) + " veh/km" : "–"], ["travel time", s.travel_time_s != null ? s.travel_time_s.toFixed(0) + " s" : "–"],
    ["congested", s.congested ? "yes" : "no"], ["confidence", s.confidence ?? "–"], ["window end", s.ts ?? "–"],
    ["data age", s.last_arrival_at ? seconds(dataAgeS(s)) + (dataAgeS(s) >= feed.staleAfterS ? " — stale" : "") : "no data"],
    ["length", seg.length_m + " m"], ["lanes", seg.lanes], ["speed limit", seg.speed_limit_kmh + " km/h"],
  ];
  const dets = (seg.detector_ids || []).map((d) => {
    const f = state.faults[d];
    return `<li>${esc(d)}${f && f.state !== "cleared" ? ` — <b>${esc(f.status || f.kind || "fault")}</b>` : ""}</li>`;
  }).join("");
  const d = $("detail");
  d.innerHTML = `<h3>${esc(id)}</h3><table>${rows.map(([k, v]) => `<tr><td>${k}</td><td>${esc(v)}</td></tr>`).join("")}</table><h4>Detectors</h4><ul class="list small">${dets || "<li>none</li>"}</ul>`;
  d.hidden = false;
  d.dataset.segment = id;
}

// ---- side panels ------------------------------------------------------------------------------------
// same origin, JSON body: the only writes the API accepts. Without auth the name typed here is recorded as a claim.
async function act(kind, id, action, note) {
  const operator = $("operator").value.trim();
  const body = operator ? { operator, note } : { note };
  await api(`/api/${kind}/${encodeURIComponent(id)}/${action}`, { method: "POST", credentials: "same-origin", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
}

// who did it: the recorded operator, and the name an unauthenticated caller gave
function who(a, cls) {
  return `<span class="${cls}">${esc(a.operator)}</span>${a.claimed_operator ? ` <span class="claimed">(says ${esc(a.claimed_operator)})</span>` : ""}`;
}

function history(actions) {
  if (!actions || actions.length < 2) return "";
  return `<ol class="history">${actions.map((a) => `<li>${esc(a.action)} by ${who(a, "by")}${a.note ? ": " + esc(a.note) : ""} <span class="at">${esc(a.at || "")}</span></li>`).join("")}</ol>`;
}

function firstAck(i) {
  return (i.actions || []).find((a) => a.action === "acknowledge") || { operator: i.acknowledged_by };
}

function renderIncidents() {
  const items = Object.values(state.incidents).filter((i) => i.state !== "resolved" || Date.now() - Date.parse(i.resolved_at || 0) < 3600e3);
  items.sort((a, b) => (a.state === "cleared") - (b.state === "cleared") || String(b.detected_at).localeCompare(String(a.detected_at)));
  const suspected = items.filter((i) => i.state === "suspected").length; // unconfirmed: listed until they expire
  $("inc-count").textContent = items.filter((i) => !["cleared", "resolved", "suspected"].includes(i.state)).length + " active" + (suspected ? `, ${suspected} suspected` : "");
  $("incidents").innerHTML = items.map((i) => `
    <li class="sev-${esc(i.severity)}" data-incident="${esc(i.incident_id)}" data-state="${esc(i.state)}">
      <b>${esc(i.kind || "incident")}</b> on <a href="#" data-seg="${esc(i.segment_id)}">${esc(i.segment_id)}</a>
      ${i.lanes ? "lane " + esc([].concat(i.lanes).join(", ")) : ""} — ${esc(i.state === "suspected" ? "unconfirmed: blocked lane or faulty loop, check CCTV" : i.severity || "")}
      <div class="meta">${esc(i.state)}${i.estimated_start ? " · since " + esc(String(i.estimated_start).slice(11, 16)) + " UTC" : ""} · detected ${esc(age(i.detected_at))} ago${i.estimated_delay_veh_h != null ? " · delay " + Number(i.estimated_delay_veh_h).toFixed(1) + " veh·h" : ""}
      ${i.acknowledged_by ? `<br>acknowledged by ${who(firstAck(i), "ack-by")}${i.ack_note ? ": " + esc(i.ack_note) : ""}` : ""}
      ${i.resolved_by ? `<br>resolved by ${esc(i.resolved_by)}${i.resolve_note ? ": " + esc(i.resolve_note) : ""}` : ""}${history(i.actions)}</div>
      ${i.state !== "resolved" ? `<input class="note" placeholder="note for the log" size="18"> ${i.acknowledged_by ? "" : `<button data-act="acknowledge">acknowledge</button>`} <button data-act="resolve">resolve</button>` : ""}
    </li>`).join("") || "<li class='meta'>no incidents</li>";
  const marks = $("incident-marks");
  if (marks) {
    marks.innerHTML = "";
    for (const i of items) {
      const p = state.paths[i.segment_id];
      if (!p || ["cleared", "resolved"].includes(i.state)) continue;
      const c = document.createElementNS(svgNS, "circle");
      c.setAttribute("cx", p.mid[0]); c.setAttribute("cy", p.mid[1]); c.setAttribute("r", Math.max(view.w, view.h) * 0.012);
      c.setAttribute("class", "incident");
      marks.appendChild(c);
    }
  }
}

function renderRecs() {
  const items = Object.values(state.recs).sort((a, b) => String(a.tls_id).localeCompare(String(b.tls_id)));
  $("recommendations").innerHTML = items.map((r) => `
    <li data-recommendation="${esc(r.recommendation_id)}">
      <b>${esc(r.tls_id)}</b> cycle ${esc(Math.round(r.cycle_s))} s, greens ${esc((r.green_s || []).map((g) => Math.round(g)).join("/"))} s
      <div class="meta">delay ${r.delay_before_s != null ? Number(r.delay_before_s).toFixed(1) : "?"} → ${r.delay_after_s != null ? Number(r.delay_after_s).toFixed(1) : "?"} s/veh · ${esc(r.reason || "")}
      ${r.decision ? `<br>${esc(r.decision.action)}ed by ${who((r.actions || []).at(-1) || r.decision, "by")}` : ""}</div>
      ${r.decision ? "" : `<input class="note" placeholder="note" size="12"> <button data-act="accept">accept</button> <button data-act="reject">reject</button>`}
    </li>`).join("") || "<li class='meta'>no recommendations yet</li>";
}

function renderHealth() {
  const faults = Object.values(state.faults).filter((f) => f.state !== "cleared");
  const total = state.net ? state.net.segments.reduce((a, s) => a + (s.detector_ids || []).length, 0) : 0;
  $("health").textContent = `${total - faults.length} of ${total} detectors healthy` + (faults.length ? ` · ${faults.length} faulty` : "");
  $("faults").innerHTML = faults.slice(0, 50).map((f) => `<li>${esc(f.detector_id)} — ${esc(f.status || f.kind || "fault")} <span class="meta">${esc(age(f.updated_at))}</span></li>`).join("");
}

function renderSummary() {
  const pts = state.summaries.slice(-60);
  const svg = $("tti");
  if (!pts.length) {
    // no city summary stream yet: derive the index from segment states (Σ actual / Σ free-flow travel time)
    let act = 0, free = 0, cong = 0, n = 0;
    for (const s of Object.values(state.segments)) {
      const seg = state.paths[s.segment_id]?.seg;
      if (!seg || !s.speed_kmh) continue;
      act += seg.length_m / (s.speed_kmh / 3.6); free += seg.length_m / (seg.speed_limit_kmh / 3.6); n++;
      if (s.congested) cong++;
    }
    $("tti-now").textContent = free ? (act / free).toFixed(2) : "–";
    $("kpi-congested").textContent = `${cong} congested`;
    $("kpi-segments").textContent = `${n} segments reporting`;
    return;
  }
  const vals = pts.map((p) => p.travel_time_index ?? 1);
  const lo = Math.min(1, ...vals), hi = Math.max(...vals, lo + 0.1);
  svg.innerHTML = `<polyline points="${vals.map((v, i) => `${(i / Math.max(1, vals.length - 1)) * 300},${80 - ((v - lo) / (hi - lo)) * 76 - 2}`).join(" ")}"></polyline>`;
  const last = pts[pts.length - 1];
  $("tti-now").textContent = (last.travel_time_index ?? 0).toFixed(2);
  $("kpi-congested").textContent = last.congested_lane_km_share != null ? `${(100 * last.congested_lane_km_share).toFixed(1)} % lane-km congested` : "";
  $("kpi-segments").textContent = `${Object.keys(state.segments).length} segments reporting`;
}

document.addEventListener("click", (e) => {
  const b = e.target.closest("button[data-act]");
  if (b) {
    const inc = b.closest("[data-incident]"), rec = b.closest("[data-recommendation]");
    const note = (b.parentElement.querySelector("input.note")?.value || "").trim();
    b.disabled = true;
    if (inc) act("incidents", inc.dataset.incident, b.dataset.act, note).catch((err) => alert(err));
    if (rec) act("recommendations", rec.dataset.recommendation, b.dataset.act, note).catch((err) => alert(err));
  }
  const a = e.target.closest("a[data-seg]");
  if (a) { e.preventDefault(); select(a.dataset.seg); }
});

// ---- live -------------------------------------------------------------------------------------------
function applyEvent(kind, rec) {
  if (kind === "segment") paintSegment(rec);
  else if (kind === "incident") {
    if (rec.state === "suspicion_expired") delete state.incidents[rec.incident_id]; // no longer supported by the model
    else state.incidents[rec.incident_id] = rec;
    renderIncidents();
  }
  else if (kind === "recommendation") { state.recs[rec.tls_id || rec.recommendation_id] = rec; renderRecs(); }
  else if (kind === "device_fault") { state.faults[rec.detector_id] = rec; renderHealth(); }
  else if (kind === "summary") { state.summaries.push(rec); state.summaries = state.summaries.slice(-240); renderSummary(); }
}

function checkFeed() {
  // the feed is stale when no segment's newest reading is younger than the limit: say so instead of "live"
  const ages = Object.values(state.segments).map(dataAgeS).filter((a) => a != null);
  const newest = ages.length ? Math.min(...ages) : null, stale = newest == null || newest >= feed.staleAfterS;
  document.body.dataset.feedStale = stale ? "1" : "0";
  if (feed.live) {
    $("conn").className = stale ? "conn stale" : "conn on";
    $("conn").textContent = stale ? "● feed stale" + (newest != null ? " · no data for " + seconds(newest) : "") : "● live";
  }
  for (const rec of Object.values(state.segments)) {
    const p = state.paths[rec.segment_id];
    if (p && (p.el.dataset.stale === "1") !== (dataAgeS(rec) == null || dataAgeS(rec) >= feed.staleAfterS)) paintSegment(rec);
  }
}

async function loadSnapshot() {
  const snap = await api("/api/snapshot");
  if (snap.server_time) feed.clockOffsetMs = snap.server_time * 1000 - Date.now();
  if (snap.stale_after_s) feed.staleAfterS = snap.stale_after_s;
  snap.segments.forEach(paintSegment);
  state.incidents = {}; snap.incidents.forEach((i) => (state.incidents[i.incident_id] = i));
  state.recs = {}; snap.recommendations.forEach((r) => (state.recs[r.tls_id || r.recommendation_id] = r));
  state.faults = {}; snap.device_faults.forEach((f) => (state.faults[f.detector_id] = f));
  state.summaries = snap.summaries;
  renderIncidents(); renderRecs(); renderHealth(); renderSummary(); checkFeed();
}

function connect() {
  const es = new EventSource("/api/stream" + (token ? "?token=" + encodeURIComponent(token) : ""));
  es.addEventListener("hello", () => { feed.live = true; $("conn").className = "conn on"; $("conn").textContent = "● live"; document.body.dataset.live = "1"; checkFeed(); });
  for (const kind of ["segment", "incident", "recommendation", "device_fault", "summary"]) {
    es.addEventListener(kind, (e) => applyEvent(kind, JSON.parse(e.data)));
  }
  es.addEventListener("resync", () => loadSnapshot());
  es.onerror = () => { feed.live = false; $("conn").className = "conn off"; $("conn").textContent = "● reconnecting"; document.body.dataset.live = "0"; };
}

async function main() {
  state.tiles = (await api("/api/console/config").catch(() => ({}))).tiles || null;
  state.net = await api("/api/network");
  $("city").textContent = state.net.name || "";
  drawNetwork(state.net);
  enableZoomPan();
  await loadSnapshot();
  connect();
  setInterval(() => { $("clock").textContent = new Date().toISOString().slice(11, 19) + " UTC"; renderSummary(); checkFeed(); }, 1000);
}

main().catch((e) => { document.body.insertAdjacentHTML("afterbegin", `<p class="fatal">console failed to start: ${esc(e.message)}</p>`); });
