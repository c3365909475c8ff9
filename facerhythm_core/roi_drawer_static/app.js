// facerhythm ROI drawer: an SVG polygon editor over one video frame.
// Plain JS, no framework, nothing loaded from the internet. The server computes the
// seed-point preview with the workflow's own make_points, so preview == workflow.
"use strict";
(() => {
  const TOKEN = document.querySelector('meta[name="drawer-token"]').content;
  const SVG_NS = "http://www.w3.org/2000/svg"; // XML namespace name, never fetched
  // Okabe-Ito: colour-blind safe, as the workflow's example_frame.png
  const COLORS = ["#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7"];
  const NAME_RE = /^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$/;
  const CLOSE_PX = 9; // click this close (screen px) to the first corner to close a polygon

  const $ = (id) => document.getElementById(id);
  const svg = $("canvas"), imgEl = $("frame");
  const gRois = $("rois"), gPoints = $("points"), gHandles = $("handles"), gDraft = $("draft");

  const S = {
    W: 0, H: 0, video: null, numFrames: 0, frame: null, out: "",
    rois: [],        // {name, points: [[x, y], ...], use: bool, color}
    sel: -1,
    mode: "idle",    // "idle" | "draw"
    draft: [], hover: null,
    spacing: 9,
    preview: { points: [], areas: {}, error: null, n: 0 },
    view: { x: 0, y: 0, w: 1, h: 1 },
    dirty: false, undo: [], redo: [],
    drag: null,      // {kind: "vertex"|"move"|"pan", ...}
    colorNext: 0,
  };

  // ---------------------------------------------------------------- helpers
  function el(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function setStatus(msg, isError) {
    const s = $("status");
    s.textContent = msg;
    s.className = isError ? "error" : "";
  }
  async function api(path, body) {
    const opts = body === undefined ? {} : {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Drawer-Token": TOKEN },
      body: JSON.stringify(body),
    };
    const r = await fetch(path, opts);
    let j;
    try { j = await r.json(); } catch (e) { throw new Error(`server answered HTTP ${r.status}`); }
    if (!j.ok) throw new Error(j.error || `HTTP ${r.status}`);
    return j;
  }
  const round2 = (v) => Math.round(v * 100) / 100;
  function pxPerUnit() { // screen pixels per image pixel
    const m = svg.getScreenCTM();
    return m ? m.a : 1;
  }
  function toImage(evt) { // client (screen) coordinates -> image pixel coordinates
    const pt = svg.createSVGPoint();
    pt.x = evt.clientX; pt.y = evt.clientY;
    const p = pt.matrixTransform(svg.getScreenCTM().inverse());
    return [p.x, p.y];
  }
  function clampPt([x, y]) { // keep corners on pixel centres inside the frame
    return [round2(Math.min(Math.max(x, 0), S.W - 1)), round2(Math.min(Math.max(y, 0), S.H - 1))];
  }
  function snapshot() { return JSON.stringify({ rois: S.rois, sel: S.sel }); }
  function pushUndo(snap) {
    S.undo.push(snap || snapshot());
    if (S.undo.length > 200) S.undo.shift();
    S.redo = [];
  }
  function restore(snap) {
    const o = JSON.parse(snap);
    S.rois = o.rois; S.sel = Math.min(o.sel, S.rois.length - 1);
  }
  function changed() { S.dirty = true; renderAll(); schedulePreview(); }
  function uniqueName(base) {
    const names = new Set(S.rois.map((r) => r.name));
    for (let k = S.rois.length + 1; ; k++) if (!names.has(`${base}_${k}`)) return `${base}_${k}`;
  }
  function nextColor() { return COLORS[S.colorNext++ % COLORS.length]; }
  function payload() {
    return {
      rois: S.rois.map((r) => ({ name: r.name, points: r.points, use_for_points: r.use })),
      point_spacing: S.spacing,
      frame_index: S.video ? S.frame : null,
    };
  }

  // ---------------------------------------------------------------- view
  function setView(v) {
    S.view = v;
    svg.setAttribute("viewBox", `${v.x} ${v.y} ${v.w} ${v.h}`);
    renderAll();
  }
  function fit() { setView({ x: -0.5, y: -0.5, w: S.W, h: S.H }); }
  function zoomAt(evt, factor) {
    const [px, py] = toImage(evt);
    const w = Math.min(Math.max(S.view.w * factor, 8), S.W * 8);
    const f = w / S.view.w, h = S.view.h * f;
    setView({ x: px - (px - S.view.x) * f, y: py - (py - S.view.y) * f, w, h });
  }

  // ---------------------------------------------------------------- render
  function renderAll() { renderCanvas(); renderList(); renderButtons(); }

  function renderCanvas() {
    const k = 1 / pxPerUnit(); // image units per screen pixel
    gRois.replaceChildren();
    S.rois.forEach((r, i) => {
      gRois.append(el("polygon", {
        points: r.points.map((p) => p.join(",")).join(" "),
        class: "roi" + (i === S.sel ? " selected" : ""),
        fill: r.color, stroke: r.color, "data-roi": i,
      }));
      if (r.points.length) {
        const top = r.points.reduce((a, b) => (b[1] < a[1] ? b : a));
        gRois.append(el("text", {
          x: top[0], y: top[1] - 6 * k, class: "roi-label", fill: r.color,
          "font-size": 13 * k, "text-anchor": "middle",
        }, r.name + (r.use ? " •" : "")));
      }
    });
    gPoints.replaceChildren();
    for (const [x, y] of S.preview.points) gPoints.append(el("circle", { cx: x, cy: y, r: 2.2 * k, class: "seed" }));
    gHandles.replaceChildren();
    if (S.mode === "idle" && S.sel >= 0 && S.sel < S.rois.length) {
      const pts = S.rois[S.sel].points;
      pts.forEach((p, j) => {
        const q = pts[(j + 1) % pts.length];
        gHandles.append(el("line", { x1: p[0], y1: p[1], x2: q[0], y2: q[1], class: "edge", "data-edge": j }));
      });
      pts.forEach((p, j) => gHandles.append(el("circle", { cx: p[0], cy: p[1], r: 4.5 * k, class: "handle", "data-vertex": j })));
    }
    gDraft.replaceChildren();
    if (S.mode === "draw" && S.draft.length) {
      const pts = S.hover ? [...S.draft, S.hover] : S.draft;
      gDraft.append(el("polyline", { points: pts.map((p) => p.join(",")).join(" "), class: "draft-line" }));
      S.draft.forEach((p, j) => gDraft.append(el("circle", {
        cx: p[0], cy: p[1], r: (j === 0 ? 5.5 : 3.5) * k, class: "handle" + (j === 0 ? " first" : ""),
      })));
    }
    svg.classList.toggle("drawing", S.mode === "draw");
  }

  function roiInfo(r) {
    const area = S.preview.areas[r.name];
    return `${r.points.length} corners` + (area !== undefined ? ` · ${area} px` : "");
  }

  function renderList() {
    const ul = $("roi-list");
    const p = S.preview;
    $("n-points").textContent = p.error ? "" : (S.rois.length ? `${p.n} seed points` : "");
    $("preview-error").textContent = p.error || "";
    $("roi-hint").style.display = S.rois.length ? "none" : "";
    // rows are made once per ROI and then updated in place: rebuilding them on every
    // preview reply would swallow clicks and typing that land meanwhile
    while (ul.children.length > S.rois.length) ul.lastElementChild.remove();
    while (ul.children.length < S.rois.length) ul.append(makeRow(ul.children.length));
    S.rois.forEach((r, i) => {
      const li = ul.children[i];
      li.classList.toggle("selected", i === S.sel);
      li.querySelector(".swatch").style.background = r.color;
      const name = li.querySelector(".roi-name");
      if (document.activeElement !== name) name.value = r.name;
      li.querySelector(".roi-use").checked = r.use;
      li.querySelector(".roi-info").textContent = roiInfo(r);
    });
  }

  function makeRow(i) { // handlers look the ROI up by position, so undo/delete keep them valid
    const li = document.createElement("li");
    li.className = "roi-item";
    li.dataset.roi = i;
    const sw = document.createElement("span");
    sw.className = "swatch";
    const name = document.createElement("input");
    name.className = "roi-name"; name.setAttribute("aria-label", "ROI name");
    name.addEventListener("change", () => rename(i, name));
    name.addEventListener("focus", () => { if (S.sel !== i) { S.sel = i; renderCanvas(); renderList(); } });
    const lab = document.createElement("label");
    const cb = document.createElement("input");
    cb.type = "checkbox"; cb.className = "roi-use";
    cb.addEventListener("change", () => { pushUndo(); S.rois[i].use = cb.checked; changed(); });
    lab.append(cb, " points");
    const del = document.createElement("button");
    del.className = "roi-del"; del.textContent = "Delete"; del.title = "Delete this ROI";
    del.addEventListener("click", (e) => { e.stopPropagation(); deleteRoi(i); });
    const info = document.createElement("span");
    info.className = "roi-info";
    li.append(sw, name, lab, del, info);
    li.addEventListener("click", (e) => {
      if (e.target === li || e.target === info || e.target === sw) { S.sel = i; renderAll(); }
    });
    return li;
  }

  function renderButtons() {
    const drawing = S.mode === "draw";
    $("add-roi").disabled = drawing;
    $("finish-roi").disabled = !drawing || S.draft.length < 3;
    $("cancel-roi").disabled = !drawing;
  }

  // ---------------------------------------------------------------- editing
  function startDraw() {
    S.mode = "draw"; S.draft = []; S.hover = null;
    setStatus("Click the corners of the new ROI; click the first corner or press Enter to close it.");
    renderAll();
  }
  function finishDraw() {
    if (S.mode !== "draw") return;
    if (S.draft.length < 3) { setStatus("A polygon needs at least 3 corners.", true); return; }
    pushUndo();
    S.rois.push({ name: uniqueName("roi"), points: S.draft, use: !S.rois.some((r) => r.use), color: nextColor() });
    S.sel = S.rois.length - 1;
    S.mode = "idle"; S.draft = []; S.hover = null;
    setStatus(`Added ${S.rois[S.sel].name}. Rename it in the list; tick "points" for the ROIs that hold the seed grid.`);
    changed();
  }
  function cancelDraw() {
    S.mode = "idle"; S.draft = []; S.hover = null;
    setStatus("Drawing cancelled.");
    renderAll();
  }
  function deleteRoi(i) {
    if (i < 0 || i >= S.rois.length) return;
    pushUndo();
    const name = S.rois[i].name;
    S.rois.splice(i, 1);
    S.sel = Math.min(S.sel, S.rois.length - 1);
    setStatus(`Deleted ${name}.`);
    changed();
  }
  function rename(i, input) {
    const v = input.value.trim();
    const clash = S.rois.some((r, j) => j !== i && r.name === v);
    if (!NAME_RE.test(v) || clash) {
      setStatus(clash ? `Another ROI is already named "${v}".`
        : "Names may use letters, digits, '_', '.', '-' (start with a letter, digit or '_').", true);
      input.value = S.rois[i].name;
      return;
    }
    pushUndo();
    S.rois[i].name = v;
    changed();
  }
  function undo() {
    if (!S.undo.length) return;
    S.redo.push(snapshot()); restore(S.undo.pop()); changed();
  }
  function redo() {
    if (!S.redo.length) return;
    S.undo.push(snapshot()); restore(S.redo.pop()); changed();
  }

  // ---------------------------------------------------------------- preview
  let previewTimer = null, previewSeq = 0;
  function schedulePreview() {
    clearTimeout(previewTimer);
    previewTimer = setTimeout(runPreview, 120);
  }
  async function runPreview() {
    const seq = ++previewSeq;
    if (!S.rois.length) {
      S.preview = { points: [], areas: {}, error: null, n: 0 };
      renderAll();
      return;
    }
    try {
      const r = await api("/api/preview", payload());
      if (seq !== previewSeq) return; // a newer edit is on its way
      S.preview = { points: r.points, areas: r.areas, error: null, n: r.n_points };
    } catch (e) {
      if (seq !== previewSeq) return;
      S.preview = { points: [], areas: {}, error: e.message, n: 0 };
    }
    renderAll();
    $("n-points").dataset.seq = String(seq); // lets tests wait for a finished preview
  }

  // ---------------------------------------------------------------- mouse
  svg.addEventListener("pointerdown", (e) => {
    svg.focus();
    const t = e.target;
    if (e.button === 1 || (e.button === 0 && S.mode === "idle" && t.dataset.vertex === undefined
        && t.dataset.edge === undefined && t.dataset.roi === undefined)) {
      S.drag = { kind: "pan", start: [e.clientX, e.clientY], view: { ...S.view }, moved: false };
      svg.setPointerCapture(e.pointerId);
      svg.classList.add("panning");
      return;
    }
    if (e.button !== 0) return;
    const p = toImage(e);
    if (S.mode === "draw") {
      if (S.draft.length >= 3) {
        const f = S.draft[0], d = Math.hypot(p[0] - f[0], p[1] - f[1]) * pxPerUnit();
        if (d <= CLOSE_PX) { finishDraw(); return; }
      }
      const q = clampPt(p), last = S.draft[S.draft.length - 1];
      // the second click of a double-click (which closes the polygon) adds no corner
      if (last && Math.hypot(q[0] - last[0], q[1] - last[1]) * pxPerUnit() < 3) return;
      S.draft.push(q);
      renderAll();
      return;
    }
    const r = S.rois[S.sel];
    if (t.dataset.vertex !== undefined && r) {
      const j = Number(t.dataset.vertex);
      if (e.shiftKey || e.altKey) {
        if (r.points.length <= 3) { setStatus("A polygon needs at least 3 corners.", true); return; }
        pushUndo(); r.points.splice(j, 1); changed();
        return;
      }
      S.drag = { kind: "vertex", j, snap: snapshot(), moved: false };
    } else if (t.dataset.edge !== undefined && r) {
      const j = Number(t.dataset.edge);
      pushUndo();
      r.points.splice(j + 1, 0, clampPt(p));
      S.drag = { kind: "vertex", j: j + 1, snap: null, moved: true };
      changed();
    } else if (t.dataset.roi !== undefined) {
      const i = Number(t.dataset.roi);
      if (i !== S.sel) { S.sel = i; renderAll(); return; }
      S.drag = { kind: "move", start: p, orig: r.points.map((q) => q.slice()), snap: snapshot(), moved: false };
    }
    if (S.drag) svg.setPointerCapture(e.pointerId);
  });

  svg.addEventListener("pointermove", (e) => {
    const p = toImage(e);
    $("cursor").textContent = (p[0] >= -0.5 && p[1] >= -0.5 && p[0] < S.W - 0.5 && p[1] < S.H - 0.5)
      ? `x ${p[0].toFixed(1)}, y ${p[1].toFixed(1)}` : "";
    if (S.mode === "draw") { S.hover = clampPt(p); renderCanvas(); return; }
    const d = S.drag;
    if (!d) return;
    if (d.kind === "pan") {
      const k = 1 / pxPerUnit();
      const dx = (e.clientX - d.start[0]) * k, dy = (e.clientY - d.start[1]) * k;
      if (Math.abs(dx) + Math.abs(dy) > 0) d.moved = true;
      S.view = { ...d.view, x: d.view.x - dx, y: d.view.y - dy };
      svg.setAttribute("viewBox", `${S.view.x} ${S.view.y} ${S.view.w} ${S.view.h}`);
      return;
    }
    const r = S.rois[S.sel];
    if (d.kind === "vertex") {
      r.points[d.j] = clampPt(p);
    } else if (d.kind === "move") {
      // shift by the largest step that keeps every corner in the frame
      let dx = p[0] - d.start[0], dy = p[1] - d.start[1];
      const xs = d.orig.map((q) => q[0]), ys = d.orig.map((q) => q[1]);
      dx = Math.min(Math.max(dx, -Math.min(...xs)), S.W - 1 - Math.max(...xs));
      dy = Math.min(Math.max(dy, -Math.min(...ys)), S.H - 1 - Math.max(...ys));
      r.points = d.orig.map((q) => [round2(q[0] + dx), round2(q[1] + dy)]);
    }
    d.moved = true;
    renderCanvas();
  });

  function endDrag() {
    const d = S.drag;
    S.drag = null;
    svg.classList.remove("panning");
    if (!d) return;
    if (d.kind === "pan") {
      if (!d.moved && S.sel >= 0) { S.sel = -1; renderAll(); } // a click on the background deselects
      else renderAll();
      return;
    }
    if (d.moved) {
      if (d.snap) pushUndo(d.snap);
      changed();
    }
  }
  svg.addEventListener("pointerup", endDrag);
  svg.addEventListener("pointercancel", endDrag);
  svg.addEventListener("pointerleave", () => { $("cursor").textContent = ""; });
  svg.addEventListener("dblclick", (e) => { if (S.mode === "draw") { e.preventDefault(); finishDraw(); } });
  svg.addEventListener("wheel", (e) => { e.preventDefault(); zoomAt(e, Math.exp(e.deltaY * 0.0015)); }, { passive: false });
  window.addEventListener("resize", () => renderCanvas());

  // ---------------------------------------------------------------- keys
  document.addEventListener("keydown", (e) => {
    const typing = ["INPUT", "TEXTAREA"].includes(document.activeElement.tagName);
    const mod = e.ctrlKey || e.metaKey;
    if (mod && e.key.toLowerCase() === "s") { e.preventDefault(); save(); return; }
    if (typing) return;
    if (mod && e.key.toLowerCase() === "z" && !e.shiftKey) { e.preventDefault(); undo(); return; }
    if (mod && (e.key.toLowerCase() === "y" || (e.key.toLowerCase() === "z" && e.shiftKey))) { e.preventDefault(); redo(); return; }
    if (mod || e.altKey) return;
    if (e.key === "n" || e.key === "N") { if (S.mode === "idle") startDraw(); }
    else if (e.key === "Enter") finishDraw();
    else if (e.key === "Escape") { if (S.mode === "draw") cancelDraw(); else { S.sel = -1; renderAll(); } }
    else if (e.key === "Backspace" && S.mode === "draw") { e.preventDefault(); S.draft.pop(); renderAll(); }
    else if (e.key === "Delete" && S.mode === "idle") deleteRoi(S.sel);
    else if (e.key === "f" || e.key === "F") fit();
  });

  // ---------------------------------------------------------------- panel
  $("add-roi").addEventListener("click", startDraw);
  $("finish-roi").addEventListener("click", finishDraw);
  $("cancel-roi").addEventListener("click", cancelDraw);
  $("spacing").addEventListener("input", () => {
    const v = Number($("spacing").value);
    if (!Number.isInteger(v) || v < 1) { S.preview.error = "Spacing must be a whole number of pixels, at least 1."; renderList(); return; }
    if (v !== S.spacing) { S.spacing = v; S.dirty = true; schedulePreview(); }
  });

  let frameTimer = null;
  function showFrame(i) {
    if (S.video) {
      S.frame = i;
      $("frame-slider").value = i; $("frame-number").value = i;
      imgEl.setAttribute("href", `/api/frame.png?i=${i}`);
      $("frame-info").textContent = `frame ${i} of ${S.numFrames}` + (S.fps ? ` (${(i / S.fps).toFixed(2)} s)` : "");
    } else {
      imgEl.setAttribute("href", `/api/frame.png?i=file&t=${Date.now()}`);
      $("frame-info").textContent = "image stored in the ROI file (no video given)";
    }
  }
  function onFrameInput(v) {
    const i = Math.min(Math.max(Math.round(Number(v)) || 0, 0), Math.max(S.numFrames - 1, 0));
    clearTimeout(frameTimer);
    $("frame-number").value = i;
    frameTimer = setTimeout(() => { if (i !== S.frame) { S.dirty = true; showFrame(i); } }, 200);
  }
  $("frame-slider").addEventListener("input", () => onFrameInput($("frame-slider").value));
  $("frame-number").addEventListener("change", () => onFrameInput($("frame-number").value));
  imgEl.addEventListener("error", () => setStatus("Could not load the frame (see the drawer's terminal).", true));

  async function save() {
    if (S.mode === "draw") { setStatus("Finish (Enter) or cancel (Esc) the ROI being drawn first.", true); return; }
    setStatus("Saving…");
    try {
      const r = await api("/api/save", payload());
      S.dirty = false;
      setStatus(`Saved ${r.names.length} ROI(s) (${r.names.join(", ")}) and ${r.n_points} seed points to ${r.path}`);
      $("notes").textContent = "";
    } catch (e) {
      setStatus(`Not saved: ${e.message}`, true);
    }
  }
  $("save").addEventListener("click", save);

  $("load").addEventListener("click", async () => {
    if (S.dirty && !confirm("Discard the unsaved changes and load the file?")) return;
    try {
      const st = await api("/api/load", { path: $("load-path").value.trim() || null });
      applyState(st);
      setStatus(`Loaded ${st.loaded_from}: ${st.rois.length} ROI(s).`);
    } catch (e) {
      setStatus(`Not loaded: ${e.message}`, true);
    }
  });

  $("quit").addEventListener("click", async () => {
    if (S.dirty && !confirm("There are unsaved changes. Quit anyway?")) return;
    try { await api("/api/quit", {}); } catch (e) { /* the server is going away */ }
    S.dirty = false;
    document.body.innerHTML = "<p style='padding:2em'>The ROI drawer has stopped. You can close this tab.</p>";
  });

  window.addEventListener("beforeunload", (e) => { if (S.dirty) { e.preventDefault(); e.returnValue = ""; } });

  // ---------------------------------------------------------------- start
  function applyState(st) {
    S.W = st.width; S.H = st.height;
    S.video = st.video; S.numFrames = st.num_frames; S.fps = st.fps; S.out = st.out;
    S.colorNext = 0;
    S.rois = st.rois.map((r) => ({ name: r.name, points: r.points, use: r.use_for_points, color: nextColor() }));
    S.sel = -1; S.mode = "idle"; S.draft = []; S.undo = []; S.redo = []; S.dirty = false;
    S.spacing = st.point_spacing;
    $("spacing").value = st.point_spacing;
    imgEl.setAttribute("width", S.W); imgEl.setAttribute("height", S.H);
    $("frame-slider").max = Math.max(S.numFrames - 1, 0);
    $("frame-number").max = Math.max(S.numFrames - 1, 0);
    $("frame-section").querySelectorAll("input").forEach((i) => { i.disabled = !S.video; });
    $("out-path").textContent = st.out;
    $("load-path").value = st.loaded_from || st.out;
    $("source").textContent = (st.video ? st.video : "(no video)") + ` · ${S.W}×${S.H}`;
    $("notes").textContent = (st.notes || []).join(" ");
    showFrame(st.video ? (st.frame_index || 0) : null);
    fit();
    schedulePreview();
  }

  api("/api/state").then((st) => {
    applyState(st);
    setStatus(st.loaded_from ? `Editing ${st.loaded_from}.` : "Ready: click \"New ROI\" (or press N) to draw.");
    document.body.dataset.ready = "1";
  }).catch((e) => setStatus(`Cannot reach the drawer server: ${e.message}`, true));
})();
