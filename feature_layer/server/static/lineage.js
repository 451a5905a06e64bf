/* Column-level lineage as inline SVG: one card per dbt node, one row per column, curves between rows.
   Layout: cards in layers by longest path over node-level edges (sources left, ML models right);
   within a layer, cards sorted by the mean height of their inputs to keep curves short. */
(function () {
  "use strict";
  const esc = (s) => String(s == null ? "" : s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  const CARD_W = 250, HEAD_H = 30, ROW_H = 24, PAD_B = 6, GAP_X = 84, GAP_Y = 18, MARGIN = 8;
  const KIND_LABEL = { source: "source", external: "table", model: "model", feature: "feature view", exposure: "ML model" };

  function trunc(s, n) { s = String(s || ""); return s.length > n ? s.slice(0, n - 1) + "…" : s; }

  function layout(graph) {
    const cards = new Map();   // unique_id -> card
    const rowOf = new Map();   // node id -> {card, index}
    for (const n of graph.nodes) {
      let card = cards.get(n.unique_id);
      if (!card) {
        const kind = n.kind === "feature" ? "feature" : n.kind;
        card = { id: n.unique_id, name: n.name, kind, resourceType: n.resource_type, view: n.feature_view, rows: [], parents: new Set(), layer: 0 };
        cards.set(n.unique_id, card);
      }
      if (n.kind === "feature") card.kind = "feature";
      if (n.column != null) { rowOf.set(n.id, { card, index: card.rows.length }); card.rows.push(n); }
      else rowOf.set(n.id, { card, index: -1 });
    }
    for (const e of graph.edges) {
      const s = rowOf.get(e.source), t = rowOf.get(e.target);
      if (s && t && s.card !== t.card) t.card.parents.add(s.card);
    }
    // longest-path layering (graph is a DAG; guard against cycles with a depth cap)
    const memo = new Map();
    const depth = (card, guard) => {
      if (memo.has(card)) return memo.get(card);
      if (guard > 64) return 0;
      let d = 0;
      for (const p of card.parents) d = Math.max(d, depth(p, guard + 1) + 1);
      memo.set(card, d);
      return d;
    };
    const layers = [];
    for (const card of cards.values()) {
      card.layer = depth(card, 0);
      (layers[card.layer] = layers[card.layer] || []).push(card);
    }
    // place layer by layer, ordering cards by the mean y of their parents
    let height = 0;
    layers.forEach((cardsInLayer, li) => {
      if (!cardsInLayer) return;
      const key = (c) => {
        const ys = [...c.parents].map((p) => p.y + p.h / 2).filter((y) => !isNaN(y));
        return ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : 0;
      };
      if (li > 0) cardsInLayer.sort((a, b) => key(a) - key(b) || a.name.localeCompare(b.name));
      else cardsInLayer.sort((a, b) => a.name.localeCompare(b.name));
      let y = MARGIN;
      for (const c of cardsInLayer) {
        c.x = MARGIN + li * (CARD_W + GAP_X);
        c.h = HEAD_H + Math.max(1, c.rows.length) * ROW_H + PAD_B;
        c.y = y;
        y += c.h + GAP_Y;
      }
      height = Math.max(height, y - GAP_Y + MARGIN);
    });
    // centre short layers vertically against the tallest
    layers.forEach((cardsInLayer) => {
      if (!cardsInLayer || !cardsInLayer.length) return;
      const last = cardsInLayer[cardsInLayer.length - 1];
      const used = last.y + last.h + MARGIN;
      const shift = Math.max(0, (height - used) / 2);
      for (const c of cardsInLayer) c.y += shift;
    });
    const width = MARGIN * 2 + layers.length * CARD_W + Math.max(0, layers.length - 1) * GAP_X;
    return { cards: [...cards.values()], rowOf, width, height: Math.max(height, 60) };
  }

  function anchor(pos, side) {
    const c = pos.card;
    const y = pos.index < 0 ? c.y + c.h / 2 : c.y + HEAD_H + pos.index * ROW_H + ROW_H / 2;
    return { x: side === "out" ? c.x + CARD_W : c.x, y };
  }

  function render(graph) {
    if (!graph || !graph.nodes || !graph.nodes.length) return '<p class="muted">No lineage available.</p>';
    const L = layout(graph);
    const parts = [];
    parts.push(`<svg class="lineage" role="img" aria-label="Column-level lineage of ${esc(graph.feature)}" ` +
      `viewBox="0 0 ${L.width} ${L.height}" width="${L.width}" height="${L.height}" xmlns="http://www.w3.org/2000/svg">`);
    parts.push('<defs><marker id="arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" class="lin-arrow"/></marker></defs>');
    parts.push('<g class="lin-edges">');
    for (const e of graph.edges) {
      const s = L.rowOf.get(e.source), t = L.rowOf.get(e.target);
      if (!s || !t) continue;
      const a = anchor(s, "out"), b = anchor(t, "in");
      const dx = Math.max(30, (b.x - a.x) / 2);
      const hot = e.target === graph.root || e.source === graph.root;
      parts.push(`<path class="lin-edge${hot ? " hot" : ""}" data-source="${esc(e.source)}" data-target="${esc(e.target)}" ` +
        `d="M${a.x},${a.y} C${a.x + dx},${a.y} ${b.x - dx},${b.y} ${b.x - 2},${b.y}" marker-end="url(#arrow)"/>`);
    }
    parts.push("</g>");
    for (const c of L.cards) {
      const href = c.view ? `#/view/${encodeURIComponent(c.view)}`
        : c.kind === "source" && c.resourceType !== "table" ? `#/source/${encodeURIComponent(c.id)}`
        : c.kind === "exposure" ? `#/ml-model/${encodeURIComponent(c.name)}` : null;
      parts.push(`<g class="lin-card kind-${esc(c.kind)}" data-unique-id="${esc(c.id)}" transform="translate(${c.x},${c.y})">`);
      parts.push(`<rect class="lin-box" width="${CARD_W}" height="${c.h}" rx="8"/>`);
      parts.push(`<path class="lin-head" d="M0,8 a8,8 0 0 1 8,-8 h${CARD_W - 16} a8,8 0 0 1 8,8 v${HEAD_H - 8} h-${CARD_W} z"/>`);
      const kindLabel = KIND_LABEL[c.kind] || c.kind;
      const room = Math.floor((CARD_W - 26 - kindLabel.length * 7.2) / 7.4);
      // a long name takes the whole header; the card's colour (and the legend) still tell the kind
      if (c.name.length <= room) parts.push(`<text class="lin-kind" x="${CARD_W - 10}" y="19" text-anchor="end">${esc(kindLabel)}</text>`);
      const title = `<text class="lin-name" x="10" y="19">${esc(trunc(c.name, c.name.length <= room ? room : 31))}<title>${esc(c.id)} (${esc(kindLabel)})</title></text>`;
      parts.push(href ? `<a class="lin-link" href="${href}">${title}</a>` : title);
      if (!c.rows.length) {
        parts.push(`<text class="lin-col muted-col" x="10" y="${HEAD_H + 16}">uses this feature</text>`);
      }
      c.rows.forEach((n, i) => {
        const y = HEAD_H + i * ROW_H;
        const isRoot = n.id === graph.root;
        const tip = [n.unique_id + "." + n.column, n.sql_type ? "type: " + n.sql_type : "", n.expression ? "= " + n.expression : ""].filter(Boolean).join("\n");
        parts.push(`<g class="lin-row${isRoot ? " root" : ""}" data-node-id="${esc(n.id)}">`);
        if (isRoot) parts.push(`<rect class="lin-root" x="4" y="${y + 1}" width="${CARD_W - 8}" height="${ROW_H - 2}" rx="5"/>`);
        parts.push(`<text class="lin-col" x="12" y="${y + 16}">${n.expression ? '<tspan class="lin-fx">ƒ </tspan>' : ""}${esc(trunc(n.column, 22))}</text>`);
        if (n.sql_type) parts.push(`<text class="lin-type" x="${CARD_W - 10}" y="${y + 16}" text-anchor="end">${esc(trunc(n.sql_type.toLowerCase(), 12))}</text>`);
        parts.push(`<title>${esc(tip)}</title></g>`);
      });
      parts.push("</g>");
    }
    parts.push("</svg>");
    return parts.join("");
  }

  // ------------------------------------------------------------ the project map (node level)
  const READABLE = 0.7;  // the smallest on-screen scale at which node names stay legible
  const M_W = 196, M_H = 46, M_COL_H = 15, M_GAP_X = 64, M_GAP_Y = 14;
  const MAP_KIND = { source: "source", seed: "seed", model: "model", feature_view: "feature view", ml_model: "ML model", exposure: "exposure" };

  /* Layers by longest path from the roots (sources left, ML models right); within a layer,
     nodes ordered by the mean position of their parents, so edges stay short. */
  function mapLayout(graph, highlight) {
    const byId = new Map(graph.nodes.map((n) => [n.id, { node: n, parents: [], layer: 0 }]));
    for (const e of graph.edges) {
      const t = byId.get(e.target);
      if (t && byId.has(e.source)) t.parents.push(byId.get(e.source));
    }
    const memo = new Map();
    const depth = (item, guard) => {
      if (memo.has(item)) return memo.get(item);
      let d = 0;
      if (guard < 64) for (const p of item.parents) d = Math.max(d, depth(p, guard + 1) + 1);
      memo.set(item, d);
      return d;
    };
    const layers = [];
    for (const item of byId.values()) {
      item.layer = depth(item, 0);
      (layers[item.layer] = layers[item.layer] || []).push(item);
    }
    let height = 0;
    layers.forEach((items, li) => {
      if (!items) return;
      const key = (it) => it.parents.length ? it.parents.reduce((a, p) => a + p.y, 0) / it.parents.length : 0;
      items.sort((a, b) => (li ? key(a) - key(b) : 0) || a.node.name.localeCompare(b.node.name));
      let y = M_GAP_Y;
      for (const it of items) {
        const cols = (highlight && highlight.get(it.node.id)) || [];
        it.cols = cols;
        it.h = M_H + Math.min(cols.length, 4) * M_COL_H;
        it.x = M_GAP_Y + li * (M_W + M_GAP_X);
        it.y = y;
        y += it.h + M_GAP_Y;
      }
      height = Math.max(height, y);
    });
    layers.forEach((items) => {
      if (!items || !items.length) return;
      const last = items[items.length - 1];
      const shift = Math.max(0, (height - (last.y + last.h + M_GAP_Y)) / 2);
      for (const it of items) it.y += shift;
    });
    const width = M_GAP_Y * 2 + layers.length * M_W + Math.max(0, layers.length - 1) * M_GAP_X;
    return { items: byId, width: Math.max(width, 120), height: Math.max(height, 60) };
  }

  /* The map as SVG. ``highlight``: node id → columns (the selected feature's column lineage). */
  function renderMap(graph, highlight) {
    if (!graph || !graph.nodes || !graph.nodes.length) return '<p class="muted empty">Nothing matches these filters.</p>';
    const L = mapLayout(graph, highlight);
    const lit = (id) => highlight && highlight.has(id);
    const out = [`<svg class="map" role="img" aria-label="Project lineage map" viewBox="0 0 ${L.width} ${L.height}" ` +
      `data-w="${L.width}" data-h="${L.height}" xmlns="http://www.w3.org/2000/svg">`];
    out.push('<defs><marker id="map-arrow" viewBox="0 0 8 8" refX="7" refY="4" markerWidth="6" markerHeight="6" orient="auto-start-reverse"><path d="M0,0 L8,4 L0,8 z" class="lin-arrow"/></marker></defs>');
    out.push('<g class="map-edges">');
    for (const e of graph.edges) {
      const s = L.items.get(e.source), t = L.items.get(e.target);
      if (!s || !t) continue;
      const a = { x: s.x + M_W, y: s.y + M_H / 2 }, b = { x: t.x, y: t.y + M_H / 2 };
      const dx = Math.max(24, (b.x - a.x) / 2);
      const hot = lit(e.source) && lit(e.target);
      out.push(`<path class="map-edge${hot ? " hl" : ""}" data-source="${esc(e.source)}" data-target="${esc(e.target)}" ` +
        `d="M${a.x},${a.y} C${a.x + dx},${a.y} ${b.x - dx},${b.y} ${b.x - 2},${b.y}" marker-end="url(#map-arrow)"/>`);
    }
    out.push("</g>");
    for (const it of L.items.values()) {
      const n = it.node;
      const kind = MAP_KIND[n.kind] || n.kind;
      out.push(`<a class="map-link" href="${esc(n.url || "#/map")}"><g class="map-node kind-${esc(n.kind)}${lit(n.id) ? " hl" : ""}" ` +
        `data-id="${esc(n.id)}" data-kind="${esc(n.kind)}" transform="translate(${it.x},${it.y})">`);
      out.push(`<rect class="map-box" width="${M_W}" height="${it.h}" rx="8"/><rect class="map-band" width="5" height="${it.h}" rx="2"/>`);
      out.push(`<text class="map-name" x="14" y="19">${esc(trunc(n.name, 25))}</text>`);
      const sub = kind + (n.entities && n.entities.length && n.kind === "feature_view" ? " · " + n.entities.join(", ") : "");
      out.push(`<text class="map-kind" x="14" y="36">${esc(trunc(sub, 30))}</text>`);
      it.cols.slice(0, 4).forEach((c, i) => out.push(
        `<text class="map-col" x="14" y="${M_H + 8 + i * M_COL_H}">${i === 3 && it.cols.length > 4 ? "+" + (it.cols.length - 3) + " more" : "▸ " + esc(trunc(c, 24))}</text>`));
      out.push(`<title>${esc(n.id)}${n.description ? "\n" + esc(trunc(n.description, 200)) : ""}</title></g></a>`);
    }
    out.push("</svg>");
    return out.join("");
  }

  /* Zoom (wheel, pinch, buttons) and pan (drag) by moving the SVG's viewBox. */
  function attachZoom(svg) {
    if (!svg) return null;
    const W = +svg.dataset.w, H = +svg.dataset.h;
    let vb = [0, 0, W, H];
    const apply = () => svg.setAttribute("viewBox", vb.map((v) => v.toFixed(2)).join(" "));
    const box = () => svg.getBoundingClientRect();
    const fit = () => {
      const r = box();
      const aspect = r.width && r.height ? r.width / r.height : W / H;
      let w = W, h = W / aspect;
      if (h < H) { h = H; w = H * aspect; }
      vb = [(W - w) / 2, (H - h) / 2, w, h];
      apply();
    };
    const zoomAt = (factor, cx, cy) => {
      const r = box();
      const px = r.width ? (cx - r.left) / r.width : 0.5, py = r.height ? (cy - r.top) / r.height : 0.5;
      const w = Math.min(Math.max(vb[2] * factor, 40), Math.max(W, H) * 6), h = w * (vb[3] / vb[2]);
      vb = [vb[0] + (vb[2] - w) * px, vb[1] + (vb[3] - h) * py, w, h];
      apply();
    };
    const zoomBy = (factor) => { const r = box(); zoomAt(factor, r.left + r.width / 2, r.top + r.height / 2); };
    const pointers = new Map();
    let dragged = 0, pinch = null;
    svg.addEventListener("wheel", (ev) => { ev.preventDefault(); zoomAt(ev.deltaY > 0 ? 1.15 : 1 / 1.15, ev.clientX, ev.clientY); }, { passive: false });
    svg.addEventListener("pointerdown", (ev) => {
      pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
      dragged = 0;
      if (pointers.size === 2) {
        const [a, b] = [...pointers.values()];
        pinch = Math.hypot(a.x - b.x, a.y - b.y);
      }
    });
    svg.addEventListener("pointermove", (ev) => {
      const last = pointers.get(ev.pointerId);
      if (!last) return;
      const r = box();
      if (pointers.size === 2 && pinch) {
        pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
        const [a, b] = [...pointers.values()];
        const d = Math.hypot(a.x - b.x, a.y - b.y);
        if (d > 0) zoomAt(pinch / d, (a.x + b.x) / 2, (a.y + b.y) / 2);
        pinch = d;
        dragged += 10;
        return;
      }
      const dx = ev.clientX - last.x, dy = ev.clientY - last.y;
      dragged += Math.abs(dx) + Math.abs(dy);
      if (dragged > 4 && !svg.hasPointerCapture(ev.pointerId)) svg.setPointerCapture(ev.pointerId);
      vb[0] -= dx * (vb[2] / (r.width || 1));
      vb[1] -= dy * (vb[3] / (r.height || 1));
      pointers.set(ev.pointerId, { x: ev.clientX, y: ev.clientY });
      apply();
    });
    const up = (ev) => { pointers.delete(ev.pointerId); if (pointers.size < 2) pinch = null; };
    svg.addEventListener("pointerup", up);
    svg.addEventListener("pointercancel", up);
    svg.addEventListener("click", (ev) => { if (dragged > 4) { ev.preventDefault(); ev.stopPropagation(); } }, true);
    // First view: the whole graph, unless that makes the text unreadably small (a phone); then
    // the sources' end at a readable size, the rest a drag or "Fit" away.
    const readable = () => {
      const r = box();
      fit();
      const scale = r.width / vb[2];
      if (!r.width || scale >= READABLE) return;
      const w = r.width / READABLE, h = r.height / READABLE;
      vb = [0, (H - h) / 2, w, h];  // vertically centred, the sources at the left edge
      apply();
    };
    readable();
    return { zoomBy, fit, readable, viewBox: () => vb.slice(), scale: () => box().width / vb[2] };
  }

  window.Lineage = { render, layout, renderMap, mapLayout, attachZoom };
})();
