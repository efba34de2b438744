"use strict";
// The annotation view: click to add, drag to move, Delete / right-click to remove, zoom, save.
(function () {
  const canvas = document.getElementById("canvas");
  const view = new FsView(canvas);
  const state = { image: null, points: [], history: [], selected: -1, dirty: false };
  const HIT_PX = 7;

  function setStatus(t) { document.getElementById("status").textContent = t; }
  function count() { document.getElementById("count").textContent = String(state.points.length); }
  function snapshot() { state.history.push(state.points.map(p => p.slice())); if (state.history.length > 200) state.history.shift(); }

  view.draw = (c) => {
    state.points.forEach(([x, y], i) => {
      const s = view.toScreen(x, y);
      c.beginPath(); c.arc(s.x, s.y, Math.max(4, 3 * view.scale), 0, 2 * Math.PI);
      c.lineWidth = 2; c.strokeStyle = i === state.selected ? "#ff0" : "#0f0"; c.stroke();
    });
  };

  function hit(ev) {
    const w = view.toWorld(ev);
    let best = -1, bd = HIT_PX;
    state.points.forEach(([x, y], i) => {
      const s = view.toScreen(x, y), d = Math.hypot(s.x - w.sx, s.y - w.sy);
      if (d <= bd) { bd = d; best = i; }
    });
    return best;
  }

  let drag = null;
  canvas.addEventListener("mousedown", (ev) => {
    if (ev.button !== 0) return;
    canvas.focus();
    const i = hit(ev), w = view.toWorld(ev);
    drag = { i, sx: w.sx, sy: w.sy, ox: view.ox, oy: view.oy, moved: false, snap: false };
  });
  canvas.addEventListener("mousemove", (ev) => {
    if (!drag) return;
    const w = view.toWorld(ev);
    if (Math.hypot(w.sx - drag.sx, w.sy - drag.sy) > 3) drag.moved = true;
    if (!drag.moved) return;
    if (drag.i >= 0) {
      if (!drag.snap) { snapshot(); drag.snap = true; }
      state.points[drag.i] = [w.x, w.y]; state.selected = drag.i; state.dirty = true;
    } else {
      view.ox = drag.ox + (w.sx - drag.sx); view.oy = drag.oy + (w.sy - drag.sy);
    }
    view.render();
  });
  canvas.addEventListener("mouseup", (ev) => {
    if (!drag) return;
    const d = drag; drag = null;
    if (d.moved) return;
    if (d.i >= 0) { state.selected = d.i; view.render(); return; }
    const w = view.toWorld(ev);
    if (!view.img || w.x < -0.5 || w.y < -0.5 || w.x > view.img.width - 0.5 || w.y > view.img.height - 0.5) return;
    snapshot(); state.points.push([w.x, w.y]); state.selected = state.points.length - 1; state.dirty = true;
    count(); view.render();
  });
  canvas.addEventListener("contextmenu", (ev) => {
    ev.preventDefault();
    const i = hit(ev);
    if (i >= 0) remove(i);
  });
  canvas.addEventListener("wheel", (ev) => {
    ev.preventDefault();
    const w = view.toWorld(ev);
    view.zoomAt(w.sx, w.sy, ev.deltaY < 0 ? 1.25 : 0.8);
  }, { passive: false });

  function remove(i) {
    snapshot(); state.points.splice(i, 1); state.selected = -1; state.dirty = true; count(); view.render();
  }
  function undo() {
    if (!state.history.length) return;
    state.points = state.history.pop(); state.selected = -1; state.dirty = true; count(); view.render();
  }
  async function save() {
    if (!state.image) return;
    try {
      const v = await fsApi(`/api/images/${encodeURIComponent(state.image)}/annotations`,
        { method: "POST", body: { points: state.points } });
      state.dirty = false;
      setStatus(`saved version ${v.version} (${v.n_points} atoms)`);
    } catch (e) { setStatus(`not saved: ${e.message}`); }
  }
  document.addEventListener("keydown", (ev) => {
    if (document.getElementById("work").hidden || ev.target.tagName === "INPUT") return;
    const k = ev.key;
    if ((k === "Delete" || k === "Backspace") && state.selected >= 0) { ev.preventDefault(); remove(state.selected); }
    else if (k === "s" || k === "S" || ((ev.ctrlKey || ev.metaKey) && k === "s")) { ev.preventDefault(); save(); }
    else if (k === "u" || k === "U" || ((ev.ctrlKey || ev.metaKey) && k === "z")) { ev.preventDefault(); undo(); }
    else if (k === "+" || k === "=") view.zoomAt(canvas.width / 2, canvas.height / 2, 1.25);
    else if (k === "-") view.zoomAt(canvas.width / 2, canvas.height / 2, 0.8);
    else if (k === "0") view.fit();
    else if (k === "Escape") { state.selected = -1; view.render(); }
  });
  document.getElementById("save").onclick = save;
  document.getElementById("undo").onclick = undo;
  document.getElementById("fit").onclick = () => view.fit();
  window.addEventListener("beforeunload", (ev) => { if (state.dirty) { ev.preventDefault(); ev.returnValue = ""; } });

  async function open(id, mode) {
    state.image = id; state.points = []; state.history = []; state.selected = -1; state.dirty = false;
    document.getElementById("mode").textContent = mode === "review" ? "review mode (starts from the model's proposals)" : "blind mode";
    await view.load(`/api/images/${encodeURIComponent(id)}/annotation-image.png`);
    const mine = await fsApi(`/api/images/${encodeURIComponent(id)}/annotations`);
    const versions = mine.users[fs.me.user] || [];
    if (versions.length) {
      state.points = versions[versions.length - 1].points.map(p => p.slice());
      setStatus(`loaded your version ${versions[versions.length - 1].version}`);
    } else if (mode === "review") {
      const prop = await fsApi(`/api/images/${encodeURIComponent(id)}/proposals`);
      state.points = prop.points; setStatus(`${prop.points.length} model proposals to review`);
    } else setStatus("no version saved yet");
    count(); view.render();
    document.body.dataset.ready = id;
  }

  fsSession(async () => {
    const sel = document.getElementById("image-select");
    const list = (await fsApi("/api/annotate/images")).images;
    sel.innerHTML = "";
    for (const im of list) {
      const o = document.createElement("option"); o.value = im.id; o.textContent = `${im.id} (${im.mode})`;
      o.dataset.mode = im.mode; sel.appendChild(o);
    }
    sel.onchange = () => open(sel.value, sel.selectedOptions[0].dataset.mode);
    if (list.length) await open(list[0].id, list[0].mode); else setStatus("no images assigned to you");
  });
})();
