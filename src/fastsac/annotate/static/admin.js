"use strict";
// Admin view: agreement per image and annotator, consensus overlay, CSV export link.
(function () {
  const view = new FsView(document.getElementById("canvas"));
  let consensus = [];
  view.draw = (c) => {
    for (const p of consensus) {
      const s = view.toScreen(p.x, p.y);
      c.beginPath(); c.arc(s.x, s.y, Math.max(4, 3 * view.scale), 0, 2 * Math.PI);
      c.strokeStyle = p.probability >= 0.5 ? "#0f0" : "#f90"; c.lineWidth = 2; c.stroke();
      if (p.in_consensus) { c.fillStyle = "rgba(0,255,0,0.35)"; c.fill(); }
    }
  };
  const fmt = (v) => (v === null || v === undefined ? "–" : Number(v).toFixed(3));
  function cell(tr, text) { const td = document.createElement("td"); td.textContent = text; tr.appendChild(td); return td; }

  async function showImage(id) {
    const c = await fsApi(`/api/images/${encodeURIComponent(id)}/consensus`);
    consensus = c.points;
    document.getElementById("consensus-count").textContent = String(c.n_consensus ?? 0);
    await view.load(`/api/images/${encodeURIComponent(id)}/annotation-image.png`);
    document.body.dataset.ready = id;
  }

  async function refresh() {
    const ag = await fsApi("/api/annotate/agreement");
    const at = document.querySelector("#annotator-table tbody"); at.innerHTML = "";
    for (const [name, r] of Object.entries(ag.annotators || {})) {
      const tr = document.createElement("tr"); tr.dataset.annotator = name;
      cell(tr, name); cell(tr, fmt(r.sensitivity)); cell(tr, fmt(r.false_click_rate)); cell(tr, String(r.clicks)); cell(tr, String(r.images));
      at.appendChild(tr);
    }
    const it = document.querySelector("#agreement-table tbody"); it.innerHTML = "";
    for (const [id, r] of Object.entries(ag.images || {})) {
      const tr = document.createElement("tr"); tr.dataset.image = id;
      cell(tr, id); cell(tr, String(r.n_annotators)); cell(tr, String(r.n_consensus)); cell(tr, fmt(r.mean_agreement));
      cell(tr, Object.entries(r.annotators).map(([n, a]) => `${n}: ${a.n_points} · ${fmt(a.precision)} · ${fmt(a.recall)}`).join("; "));
      it.appendChild(tr);
    }
    const sel = document.getElementById("image-select");
    const images = (await fsApi("/api/annotate/images")).images;
    const keep = sel.value;
    sel.innerHTML = "";
    for (const im of images) { const o = document.createElement("option"); o.value = im.id; o.textContent = im.id; sel.appendChild(o); }
    if (keep) sel.value = keep;
    if (sel.value) await showImage(sel.value);
    document.getElementById("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
  }

  fsSession(async (me) => {
    if (me.role !== "admin") { document.getElementById("status").textContent = "admins only"; return; }
    document.getElementById("refresh").onclick = refresh;
    document.getElementById("retrain").onclick = async () => {
      const out = document.getElementById("retrain-result");
      out.textContent = "retraining…";
      try {
        const r = await fsApi("/api/annotate/retrain", { method: "POST", body: { folds: 4 } });
        out.textContent = `${r.model}: held-out F1 vs consensus ${fmt(r.f1_new_heldout)} vs current detector ` +
          `${fmt(r.f1_baseline)} (${r.folds} folds, ${r.images.length} images) — ` +
          (r.better ? "better: may become the default" : "not better: keep the current detector");
      } catch (e) { out.textContent = `retraining failed: ${e.message}`; }
    };
    document.getElementById("image-select").onchange = (ev) => showImage(ev.target.value);
    await refresh();
  });
})();
