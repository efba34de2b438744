"use strict";
// Shared by the annotation and admin pages: session, JSON calls with the CSRF token.
const fs = { csrf: null, me: null };

function fsCookie(name) {
  const m = document.cookie.split("; ").find(c => c.startsWith(name + "="));
  return m ? decodeURIComponent(m.slice(name.length + 1)) : "";
}

async function fsApi(path, opts = {}) {
  const headers = Object.assign({}, opts.headers || {});
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  // The session's CSRF token; before login the page's double-submit cookie (fastsac serve).
  if (opts.method && opts.method !== "GET") headers["x-csrf-token"] = fs.csrf || fsCookie("fastsac_csrf");
  const r = await fetch(path, { method: opts.method || "GET", headers, credentials: "same-origin",
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body) });
  let data = null;
  const type = r.headers.get("content-type") || "";
  if (type.includes("json")) data = await r.json();
  if (!r.ok) { const e = new Error((data && data.error) || r.statusText); e.status = r.status; throw e; }
  return data;
}

async function fsSession(onReady) {
  const login = document.getElementById("login"), work = document.getElementById("work");
  async function ready(me) {
    fs.me = me; fs.csrf = me.csrf;
    document.getElementById("whoami").textContent = `${me.user} (${me.role})`;
    const out = document.getElementById("logout-button");
    if (out) { out.hidden = false; out.onclick = async () => { await fsApi("/api/logout", { method: "POST" }); location.reload(); }; }
    login.hidden = true; work.hidden = false;
    await onReady(me);
  }
  document.getElementById("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const err = document.getElementById("login-error");
    err.textContent = "";
    try {
      const me = await fsApi("/api/login", { method: "POST", body: {
        name: document.getElementById("login-name").value,
        password: document.getElementById("login-password").value } });
      await ready(me);
    } catch (e) { err.textContent = e.message; }
  });
  try { await ready(await fsApi("/api/me")); } catch (e) { login.hidden = false; work.hidden = true; }
}

// A canvas view of one image with zoom and pan; world coordinates are image pixels.
class FsView {
  constructor(canvas) {
    this.canvas = canvas; this.ctx = canvas.getContext("2d");
    this.img = null; this.scale = 1; this.ox = 0; this.oy = 0; this.draw = () => {};
  }
  async load(url) {
    const r = await fetch(url, { credentials: "same-origin" });
    if (!r.ok) throw new Error(`image: ${r.status}`);
    const bmp = await createImageBitmap(await r.blob());
    this.img = bmp; this.fit();
  }
  fit() {
    if (!this.img) return;
    this.scale = Math.min(this.canvas.width / this.img.width, this.canvas.height / this.img.height);
    this.ox = (this.canvas.width - this.img.width * this.scale) / 2;
    this.oy = (this.canvas.height - this.img.height * this.scale) / 2;
    this.render();
  }
  toWorld(ev) {
    const b = this.canvas.getBoundingClientRect();
    const sx = (ev.clientX - b.left) * this.canvas.width / b.width, sy = (ev.clientY - b.top) * this.canvas.height / b.height;
    return { x: (sx - this.ox) / this.scale, y: (sy - this.oy) / this.scale, sx, sy };
  }
  toScreen(x, y) { return { x: x * this.scale + this.ox, y: y * this.scale + this.oy }; }
  zoomAt(sx, sy, f) {
    const wx = (sx - this.ox) / this.scale, wy = (sy - this.oy) / this.scale;
    this.scale = Math.max(0.05, Math.min(64, this.scale * f));
    this.ox = sx - wx * this.scale; this.oy = sy - wy * this.scale; this.render();
  }
  render() {
    const c = this.ctx;
    c.setTransform(1, 0, 0, 1, 0, 0); c.fillStyle = "#111"; c.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (this.img) {
      c.imageSmoothingEnabled = this.scale < 2;
      c.setTransform(this.scale, 0, 0, this.scale, this.ox, this.oy);
      // Pixel centres sit at integer coordinates (the labels' convention).
      c.drawImage(this.img, -0.5, -0.5);
      c.setTransform(1, 0, 0, 1, 0, 0);
    }
    this.draw(c);
  }
}
