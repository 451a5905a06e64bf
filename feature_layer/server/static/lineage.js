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
      const href = c.view ? `#/view/${encodeURIComponent(c.view)}` : null;
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

  window.Lineage = { render, layout };
})();
