// fastsac web page: plain JS over the HTTP API of docs/web.md (no build step).
"use strict";

const $ = (sel) => document.querySelector(sel);
const el = (tag, attrs = {}, ...kids) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const k of kids) e.append(k);
  return e;
};
let CONFIG = null;
const MASK_OPACITY = 0.45;  // the mask PNG is opaque blue over vacuum, transparent over support
const PLOT_FILES = ["nn_histogram.png", "cluster_sizes.png", "pair_correlation.png"];
const SPECIES_COLORS = ["#33bbee", "#ee3377", "#ffdd00", "#00dd88", "#aa66ff", "#ff7700"];

function cookie(name) {
  const m = document.cookie.split("; ").find((c) => c.startsWith(name + "="));
  return m ? decodeURIComponent(m.slice(name.length + 1)) : "";
}

async function api(path, opts = {}) {
  const o = { credentials: "same-origin", ...opts, headers: { ...(opts.headers || {}) } };
  if (o.method && o.method !== "GET") o.headers["X-CSRF-Token"] = cookie(CONFIG ? CONFIG.csrf_cookie : "fastsac_csrf");
  const r = await fetch(path, o);
  let body = null;
  try { body = await r.json(); } catch (e) { body = { error: `${r.status} ${r.statusText}` }; }
  if (!r.ok) throw new Error(body && body.error ? body.error : `${r.status}`);
  return body;
}
const postJSON = (path, obj) => api(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });

function fmt(v, d = 3) {
  if (v === null || v === undefined) return "–";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : (Math.abs(v) >= 1000 || Math.abs(v) < 1e-3 ? v.toExponential(2) : v.toPrecision(d + 1).replace(/\.?0+$/, ""));
  if (typeof v === "object") return JSON.stringify(v);
  return String(v);
}
function kvTable(table, rows) {
  table.replaceChildren(...rows.map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { text: fmt(v) }))));
}

// ----------------------------------------------------------------- tabs
function showTab(name) {
  document.querySelectorAll("nav button").forEach((b) => b.classList.toggle("active", b.dataset.tab === name));
  document.querySelectorAll(".tab").forEach((s) => s.classList.toggle("active", s.id === "tab-" + name));
  if (name === "batches") refreshBatches();
}

// ----------------------------------------------------------------- viewer with atom overlay
function classColor(size) {
  const c = CONFIG.cluster_colors;
  return size >= 4 ? c["4plus"] : size === 3 ? c.trimer : size === 2 ? c.dimer : c.monomer;
}

class AtomViewer {
  constructor(elementId, { onSelect, onViewport } = {}) {
    this.box = document.getElementById(elementId);
    this.viewer = OpenSeadragon({
      element: this.box, prefixUrl: "/static/vendor/openseadragon/images/", showNavigator: true,
      maxZoomPixelRatio: 8, visibilityRatio: 0.5, crossOriginPolicy: false, gestureSettingsMouse: { clickToZoom: false },
    });
    this.canvas = el("canvas", { class: "atoms" });
    this.box.append(this.canvas);
    this.atoms = null; this.showAtoms = true; this.mask = null; this.maskUrl = null;
    this.onSelect = onSelect; this.onViewport = onViewport; this.selected = -1;
    // A viewer made inside a hidden tab learns its size late: fit the image once it is open.
    this.viewer.addHandler("open", () => {
      this.viewer.viewport.resize(new OpenSeadragon.Point(this.box.clientWidth, this.box.clientHeight), false);
      this.viewer.viewport.goHome(true);
    });
    const redraw = () => this.draw();
    for (const ev of ["animation", "update-viewport", "resize", "open"]) this.viewer.addHandler(ev, redraw);
    // The atoms of the viewport are fetched once the view settles (debounced).
    let timer = null;
    const settled = () => {
      if (!this.onViewport) return;
      clearTimeout(timer);
      timer = setTimeout(() => this.onViewport(this.visibleRect()), 150);
    };
    for (const ev of ["animation-finish", "open", "resize", "viewport-change"]) this.viewer.addHandler(ev, settled);
    this.viewer.addHandler("canvas-click", (e) => {
      if (!e.quick) return;
      const i = this.pick(e.position.x, e.position.y);
      if (i >= 0) { e.preventDefaultAction = true; this.selected = i; this.draw(); this.onSelect && this.onSelect(i, this.atoms); }
    });
  }
  open(dziUrl, maskUrl) {
    this.atoms = null; this.selected = -1; this.mask = null; this.maskUrl = maskUrl;
    this.box.dataset.mask = "off";
    this.viewer.open(dziUrl);
  }
  item() { return this.viewer.world.getItemAt(0); }
  setAtoms(atoms) { this.atoms = atoms; this.selected = -1; this.draw(); }
  setMask(on) {
    const item = this.item();
    if (!item || !this.maskUrl) { this.box.dataset.mask = "none"; return; }
    if (on && !this.mask) {
      this.viewer.addSimpleImage({ url: this.maskUrl, x: 0, y: 0, width: 1, opacity: MASK_OPACITY,
        success: (ev) => { this.mask = ev.item; this.box.dataset.mask = "on"; } });
      return;
    }
    if (this.mask) { this.mask.setOpacity(on ? MASK_OPACITY : 0); this.box.dataset.mask = on ? "on" : "off"; }
  }
  transform() {
    const item = this.item();
    if (!item) return null;
    const p0 = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(0, 0));
    const p1 = item.imageToViewerElementCoordinates(new OpenSeadragon.Point(1, 0));
    return { x0: p0.x, y0: p0.y, s: p1.x - p0.x };
  }
  visibleRect() {
    const item = this.item();
    if (!item) return null;
    const r = item.viewportToImageRectangle(this.viewer.viewport.getBounds(true));
    return { x0: r.x, y0: r.y, x1: r.x + r.width, y1: r.y + r.height };
  }
  color(i) {
    const d = this.atoms.data;
    if (d.species) { const s = d.species[i]; return s === null || s < 0 ? "#bbbbbb" : SPECIES_COLORS[s % SPECIES_COLORS.length]; }
    return classColor(d.cluster_size ? d.cluster_size[i] : 1);
  }
  draw() {
    const c = this.canvas, w = this.box.clientWidth, h = this.box.clientHeight;
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const g = c.getContext("2d");
    g.clearRect(0, 0, w, h);
    const t = this.transform();
    if (!t || !this.atoms || !this.showAtoms) return;
    const x = this.atoms.data.x_px, y = this.atoms.data.y_px;
    const r = Math.max(3, Math.min(14, 3.5 * t.s));
    g.lineWidth = 1.6;
    for (let i = 0; i < x.length; i++) {
      const px = t.x0 + (x[i] + 0.5) * t.s, py = t.y0 + (y[i] + 0.5) * t.s;
      if (px < -r || py < -r || px > w + r || py > h + r) continue;
      g.strokeStyle = this.color(i);
      g.beginPath(); g.arc(px, py, r, 0, 2 * Math.PI); g.stroke();
      if (this.atoms.data.in_support && this.atoms.data.in_support[i] === 0) {
        g.beginPath(); g.moveTo(px - r, py - r); g.lineTo(px + r, py + r); g.stroke();
      }
    }
    if (this.selected >= 0 && this.selected < x.length) {
      g.strokeStyle = "#ffffff"; g.lineWidth = 2.5;
      g.beginPath(); g.arc(t.x0 + (x[this.selected] + 0.5) * t.s, t.y0 + (y[this.selected] + 0.5) * t.s, r + 4, 0, 2 * Math.PI); g.stroke();
    }
  }
  pick(sx, sy) {
    const t = this.transform();
    if (!t || !this.atoms) return -1;
    const x = this.atoms.data.x_px, y = this.atoms.data.y_px;
    let best = -1, bd = Math.max(10, 4 * t.s) ** 2;
    for (let i = 0; i < x.length; i++) {
      const dx = t.x0 + (x[i] + 0.5) * t.s - sx, dy = t.y0 + (y[i] + 0.5) * t.s - sy;
      if (dx * dx + dy * dy < bd) { bd = dx * dx + dy * dy; best = i; }
    }
    return best;
  }
}

function atomRow(table, i, atoms) {
  kvTable(table, [["atom", i], ...atoms.columns.map((c) => [c, atoms.data[c][i]])]);
}

function legend() {
  const c = CONFIG.cluster_colors, names = { monomer: "monomer", dimer: "dimer", trimer: "trimer", "4plus": "≥4" };
  $("#legend").replaceChildren(...Object.keys(names).map((k) => {
    const i = el("i"); i.style.color = c[k];
    return el("span", { class: "legend-item" }, i, names[k]);
  }));
}

// ----------------------------------------------------------------- analyse tab
const JOBS = new Map();  // id -> last JSON
let CURRENT = null;      // id of the image in the viewer
let imageViewer = null;

function progressCell(j) {
  if (j.status === "failed") return el("span", { class: "error", text: "failed: " + (j.error || "") });
  if (j.status === "done") return el("span", { text: "done" });
  const frac = j.progress ? j.progress.fraction : 0;
  const bar = el("span", { class: "progress" }, el("span"));
  bar.firstChild.style.width = Math.round(100 * frac) + "%";
  return el("span", {}, bar, " " + (j.progress ? j.progress.stage : j.status));
}

function renderJobs() {
  const tb = $("#jobs tbody");
  tb.replaceChildren(...[...JOBS.values()].map((j) => {
    const cal = j.pixel_size_nm ? `${fmt(j.pixel_size_nm, 4)} nm/px (${j.pixel_size_source})` : (j.status === "rejected" ? "" : "none");
    const actions = el("td");
    if (j.status === "done") {
      const b = el("button", { class: "link view", text: "view" });
      b.onclick = () => openImage(j.id);
      actions.append(b, el("a", { href: `/api/images/${j.id}/bundle.zip`, text: "zip" }));
    }
    const tr = el("tr", { "data-id": j.id || "", "data-status": j.status },
      el("td", { text: j.name }), el("td", {}, j.status === "rejected" ? el("span", { class: "error", text: "rejected: " + j.error }) : progressCell(j)),
      el("td", { text: cal }), el("td", { class: "n-atoms", text: j.n_atoms === null || j.n_atoms === undefined ? "" : String(j.n_atoms) }), actions);
    if (j.id && j.id === CURRENT) tr.classList.add("selected");
    return tr;
  }));
}

const inWork = (j) => j.id && (j.status === "queued" || j.status === "running" ||
  (j.status === "done" && j.plots && (j.plots.status === "queued" || j.plots.status === "running")));
async function pollJobs() {
  for (const j of [...JOBS.values()].filter(inWork)) {
    try {
      const n = await api(`/api/images/${j.id}`);
      JOBS.set(j.id, n);
      if (n.status === "done" && (CURRENT === null || CURRENT === n.id)) openImage(n.id);
    } catch (e) { /* transient */ }
  }
  renderJobs();
}

async function upload(ev) {
  ev.preventDefault();
  const files = [...$("#file-input").files];
  if (!files.length) return;
  let batch = null;
  const bname = $("#batch-name").value.trim();
  if (files.length > 1 || bname) batch = (await postJSON("/api/batches", { name: bname || `batch of ${files.length}` })).id;
  for (const f of files) {
    const fd = new FormData();
    fd.append("file", f, f.name);
    if (batch) fd.append("batch", batch);
    if ($("#pixel-size").value) fd.append("pixel_size_nm", $("#pixel-size").value);
    fd.append("detector", $("#detector").value);
    fd.append("multimer_cutoff_nm", $("#cutoff").value);
    try {
      const r = await api("/api/images", { method: "POST", body: fd });
      JOBS.set(r.id, { ...r, status: "queued", n_atoms: null });
    } catch (e) {
      JOBS.set("rejected-" + Math.random(), { id: null, name: f.name, status: "rejected", error: e.message });
    }
    renderJobs();
  }
  $("#file-input").value = "";
}

async function openImage(id) {
  const j = await api(`/api/images/${id}`);
  const fresh = CURRENT !== id || $("#image-view").dataset.finished !== String(j.finished);
  CURRENT = id;
  $("#image-view").classList.remove("hidden");
  $("#image-view").dataset.finished = String(j.finished);
  $("#image-title").textContent = j.name;
  renderJobs();
  showExtras(j);
  if (!fresh) return;
  $("#recal-px").value = j.pixel_size_nm || "";
  $("#recal-source").textContent = j.pixel_size_nm ? `nm/px (${j.pixel_size_source})` : "not calibrated";
  $("#recal-detector").value = j.params.detector;
  $("#recal-cutoff").value = j.params.multimer_cutoff_nm;
  $("#atom-count").textContent = "…";
  $("#mask-toggle").checked = false;
  const hasMask = (j.files || []).includes("support_mask.png");
  $("#mask-toggle").disabled = !hasMask;
  imageViewer.open(`/api/images/${id}/image.dzi`, hasMask ? `/api/images/${id}/mask.png` : null);
  const atoms = await api(`/api/images/${id}/atoms.json`);
  imageViewer.setAtoms(atoms);
  $("#atom-count").textContent = String(atoms.n);
  $("#atom-row").replaceChildren(el("tr", {}, el("td", { text: "click an atom" })));
  const s = j.summary || {}, u = s.length_unit || "nm";
  kvTable($("#summary"), [
    ["atoms", s.n_atoms], ["atoms on support", s.n_atoms_in_support], ["support area (nm²)", s.support_area_nm2],
    ["vacuum fraction", s.vacuum_fraction], [`density (/${u}²)`, s[`density_per_${u}2`]],
    [`mean NN (${u})`, s[`nn_mean_${u}`]], [`random NN 1/(2√λ) (${u})`, s[`expected_nn_random_${u}`]],
    ["multimer cutoff (nm)", s.multimer_cutoff_nm], ["multimer share", s.multimer_fraction],
    ["Clark–Evans R", s.clark_evans_R], ["Clark–Evans p", s.clark_evans_p_value],
    ["monomers / dimers / trimers / ≥4", `${s.n_monomers} / ${s.n_dimers} / ${s.n_trimers} / ${s.n_clusters_4plus}`],
    ["detector", s.detector ? s.detector.name : null]]);
}

function showExtras(j) {
  // plots, report and downloads: the plots are rendered after the result, so this runs again then
  const id = j.id, files = j.files || [], key = `${id}/${j.finished}/${j.plots ? j.plots.status : ""}`;
  if ($("#plots").dataset.key === key) return;
  $("#plots").dataset.key = key;
  $("#plots").replaceChildren(...PLOT_FILES.filter((f) => files.includes(f)).map((f) =>
    el("img", { src: `/api/images/${id}/files/${f}?v=${j.finished}`, alt: f })));
  if (j.plots && j.plots.status === "queued") $("#plots").append(el("p", { class: "hint", text: "rendering plots…" }));
  if (j.plots && j.plots.status === "failed") $("#plots").append(el("p", { class: "error", text: j.plots.error }));
  const dl = [["bundle.zip (everything)", `/api/images/${id}/bundle.zip`, "download-bundle"]];
  for (const f of ["atoms.csv", "atoms.parquet", "clusters.csv", "summary.json", "overlay.png", "support_mask.png", "report.html"])
    if (files.includes(f)) dl.push([f, `/api/images/${id}/files/${f}`, "download-" + f.replace(".", "-")]);
  $("#downloads").replaceChildren(...dl.map(([t, href, idn]) => el("li", {}, el("a", { href, id: idn, text: t, target: t.endsWith(".html") || t.endsWith(".png") ? "_blank" : "_self" }))));
}

async function reanalyse() {
  if (!CURRENT) return;
  const body = { pixel_size_nm: $("#recal-px").value || null, detector: $("#recal-detector").value,
    multimer_cutoff_nm: $("#recal-cutoff").value };
  try {
    await postJSON(`/api/images/${CURRENT}/analyze`, body);
    JOBS.set(CURRENT, await api(`/api/images/${CURRENT}`));
    renderJobs();
  } catch (e) { alert(e.message); }
}

// ----------------------------------------------------------------- batches tab
let BATCHES = [];
async function refreshBatches() {
  BATCHES = (await api("/api/batches")).batches;
  $("#batches tbody").replaceChildren(...BATCHES.map((b) => {
    const v = el("button", { class: "link", text: "view" });
    v.onclick = () => openBatch(b.id);
    return el("tr", { "data-id": b.id }, el("td", { text: b.name }), el("td", { text: String(b.n_images) }),
      el("td", { text: b.report_status || "–" }), el("td", {}, v));
  }));
  for (const sel of ["#compare-a", "#compare-b"]) {
    const keep = $(sel).value;
    $(sel).replaceChildren(...BATCHES.map((b) => el("option", { value: b.id, text: b.name })));
    if (keep) $(sel).value = keep;
  }
}

async function openBatch(id) {
  const b = await api(`/api/batches/${id}`);
  $("#batch-view").classList.remove("hidden");
  $("#batch-title").textContent = b.name;
  const u = (b.images.find((i) => i.row) || { row: { unit: "nm" } }).row.unit;
  const head = el("tr", {}, ...["image", "status", "atoms", `density (/${u}²)`, `mean NN (${u})`, "multimer share", "Clark–Evans R", "vacuum"].map((h) => el("th", { text: h })));
  const rows = b.images.map((i) => el("tr", {}, el("td", { text: i.name }),
    el("td", { class: i.status === "failed" ? "error" : "", text: i.status === "failed" ? "failed: " + i.error : i.status }),
    ...(i.row ? [i.row.n_atoms, i.row.density, i.row.nn_mean, i.row.multimer_share, i.row.clark_evans_R, i.row.vacuum_fraction] : ["", "", "", "", "", ""]).map((v) => el("td", { text: v === "" ? "" : fmt(v) }))));
  $("#batch-table").replaceChildren(head, ...rows);
  const p = b.pooled;
  if (p) {
    const pu = p.unit || u;
    kvTable($("#pooled"), Object.entries(p).filter(([k, v]) => typeof v !== "object" || v === null).map(([k, v]) => [k, v]));
    $("#batch-plots").replaceChildren(...(b.files || []).filter((f) => f.endsWith(".png")).map((f) =>
      el("img", { src: `/api/batches/${id}/files/${f}`, alt: f })));
    void pu;
  } else {
    kvTable($("#pooled"), [["report", b.report.status === "failed" ? "failed: " + b.report.error : (b.report.status || "waiting for images")]]);
    $("#batch-plots").replaceChildren();
    if (b.report.status === "queued" || b.report.status === "running" || b.images.some((i) => i.status === "queued" || i.status === "running"))
      setTimeout(() => openBatch(id), 1000);
  }
  const dl = [["batch bundle.zip", `/api/batches/${id}/bundle.zip`]];
  for (const f of b.files || []) if (!f.endsWith(".png")) dl.push([f, `/api/batches/${id}/files/${f}`]);
  $("#batch-downloads").replaceChildren(...dl.map(([t, href]) => el("li", {}, el("a", { href, text: t, target: t.endsWith(".html") ? "_blank" : "_self" }))));
}

async function compare() {
  const a = $("#compare-a").value, b = $("#compare-b").value;
  $("#compare-status").textContent = "running…";
  try {
    const c = await postJSON("/api/comparisons", { a, b });
    let r;
    for (;;) {
      r = await api(`/api/comparisons/${c.id}`);
      if (r.status === "done" || r.status === "failed") break;
      await new Promise((res) => setTimeout(res, 700));
    }
    if (r.status === "failed") { $("#compare-status").textContent = "failed: " + r.error; return; }
    $("#compare-status").replaceChildren(el("a", { href: `/api/comparisons/${c.id}/report.html`, target: "_blank", text: "report" }));
    kvTable($("#compare-result"), Object.entries(r.comparison).filter(([k, v]) => typeof v !== "object" || v === null));
  } catch (e) { $("#compare-status").textContent = e.message; }
}

// ----------------------------------------------------------------- montages tab
let montageViewer = null, MONTAGE = null, montageReq = 0;
async function openMontage(id) {
  if (!id) return;
  MONTAGE = await api(`/api/montages/${id}`);
  $("#montage-view").classList.remove("hidden");
  const s = MONTAGE.summary, u = s.length_unit || "nm";
  kvTable($("#montage-summary"), [["name", MONTAGE.name], ["size (px)", MONTAGE.shape ? MONTAGE.shape.join(" × ") : "?"],
    ["atoms", s.n_atoms], [`density (/${u}²)`, s[`density_per_${u}2`]], [`mean NN (${u})`, s[`nn_mean_${u}`]],
    ["multimer share", s.multimer_fraction], ["Clark–Evans R", s.clark_evans_R]]);
  $("#montage-downloads").replaceChildren(...MONTAGE.files.map((f) => el("li", {}, el("a", { href: `/api/montages/${id}/files/${f}`, text: f }))));
  $("#montage-mask-toggle").checked = false;
  $("#montage-mask-toggle").disabled = !MONTAGE.mask;
  if (MONTAGE.tiles) montageViewer.open(`/api/montages/${id}/image.dzi`, MONTAGE.mask ? `/api/montages/${id}/mask.png` : null);
  else $("#montage-note").textContent = "source image not readable here: atoms only";
}
async function loadMontageAtoms(rect) {
  if (!MONTAGE || !rect) return;
  const n = ++montageReq;
  const q = new URLSearchParams({ x0: Math.floor(rect.x0), y0: Math.floor(rect.y0), x1: Math.ceil(rect.x1), y1: Math.ceil(rect.y1), limit: 20000 });
  const a = await api(`/api/montages/${MONTAGE.id}/atoms?${q}`);
  if (n !== montageReq) return;  // a newer viewport is on its way
  montageViewer.setAtoms(a);
  $("#montage-count").textContent = String(a.n);
  $("#montage-note").textContent = a.truncated ? `showing ${a.returned} of ${a.n}: zoom in for all` : "";
}

// ----------------------------------------------------------------- live tab
let liveSource = null;
function liveRender(rows, stats, nFrames) {
  $("#live-frames").textContent = String(nFrames);
  $("#live-updated").textContent = new Date().toLocaleTimeString();
  if (stats) {
    $("#live-atoms").textContent = fmt(stats.n_atoms);
    $("#live-multimer").textContent = fmt(stats.multimer_fraction ?? stats.multimer_share);
    kvTable($("#live-stats"), Object.entries(stats).filter(([k, v]) => typeof v !== "object" || v === null));
  }
  const t = $("#live-table");
  if (rows.length && !t.firstChild) t.append(el("tr", {}, ...Object.keys(rows[0]).map((k) => el("th", { text: k }))));
  for (const r of rows) t.insertBefore(el("tr", { class: "frame-row" }, ...Object.values(r).map((v) => el("td", { text: fmt(v) }))), t.children[1] || null);
  while (t.children.length > 101) t.lastChild.remove();
  const img = $("#live-overlay");
  img.onerror = () => { img.classList.add("hidden"); };  // no overlay drawn yet: try again at the next frame
  img.onload = () => { img.classList.remove("hidden"); };
  img.src = `/api/live/${$("#live-select").value}/files/overlay.png?t=${Date.now()}`;
}
function openLive(id) {
  if (liveSource) liveSource.close();
  if (!id) return;
  $("#live-view").classList.remove("hidden");
  liveSource = new EventSource(`/api/live/${id}/events`);
  liveSource.addEventListener("snapshot", (e) => {
    const d = JSON.parse(e.data);
    $("#live-table").replaceChildren();
    liveRender(d.frames, d.stats, d.n_frames);
  });
  liveSource.addEventListener("frames", (e) => {
    const d = JSON.parse(e.data);
    liveRender(d.frames, d.stats, d.n_frames);
  });
}

// ----------------------------------------------------------------- start
async function main() {
  CONFIG = await api("/api/config");
  document.querySelectorAll("nav button").forEach((b) => b.addEventListener("click", () => showTab(b.dataset.tab)));
  for (const sel of ["#detector", "#recal-detector"]) $(sel).replaceChildren(...CONFIG.detectors.map((d) => el("option", { value: d, text: d })));
  $("#cutoff").value = CONFIG.multimer_cutoff_nm;
  $("#file-input").accept = CONFIG.suffixes.join(",");
  $("#suffix-hint").textContent = `${CONFIG.suffixes.join(" ")} · up to ${Math.round(CONFIG.max_upload_bytes / 2 ** 20)} MB, ${Math.round(CONFIG.max_pixels / 1e6)} Mpx`;
  $("#upload-form").addEventListener("submit", upload);
  $("#reanalyse").addEventListener("click", reanalyse);
  $("#compare-button").addEventListener("click", compare);
  legend();
  imageViewer = new AtomViewer("viewer", { onSelect: (i, a) => atomRow($("#atom-row"), i, a) });
  $("#atoms-toggle").addEventListener("change", (e) => { imageViewer.showAtoms = e.target.checked; imageViewer.draw(); });
  $("#mask-toggle").addEventListener("change", (e) => imageViewer.setMask(e.target.checked));
  montageViewer = new AtomViewer("montage-viewer", { onSelect: (i, a) => atomRow($("#montage-atom-row"), i, a), onViewport: loadMontageAtoms });
  $("#montage-mask-toggle").addEventListener("change", (e) => montageViewer.setMask(e.target.checked));
  $("#montage-select").replaceChildren(el("option", { value: "", text: CONFIG.montages.length ? "choose…" : "(none)" }), ...CONFIG.montages.map((m) => el("option", { value: m, text: m })));
  $("#montage-select").addEventListener("change", (e) => openMontage(e.target.value));
  $("#live-select").replaceChildren(el("option", { value: "", text: CONFIG.live.length ? "choose…" : "(none)" }), ...CONFIG.live.map((m) => el("option", { value: m, text: m })));
  $("#live-select").addEventListener("change", (e) => openLive(e.target.value));
  for (const j of (await api("/api/images")).images.reverse()) JOBS.set(j.id, j);
  renderJobs();
  setInterval(pollJobs, 700);
  document.body.dataset.ready = "1";
}
window.addEventListener("DOMContentLoaded", main);
