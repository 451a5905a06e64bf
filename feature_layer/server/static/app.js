/* feature_layer UI: a hash-routed single page over the JSON API. No framework, no build, no CDN. */
(function () {
  "use strict";
  const H = window.Highlight;
  const esc = (s) => String(s == null ? "" : s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
  const app = document.getElementById("app");
  const q = document.getElementById("q");
  // The Content-Security-Policy forbids inline style attributes: widths are set through the CSSOM.
  new MutationObserver(() => app.querySelectorAll("[data-width]").forEach((el) => {
    el.style.width = el.dataset.width + "%";
    el.removeAttribute("data-width");
  })).observe(app, { childList: true, subtree: true });
  const state = { catalog: null, map: null, table: null, searchApi: null,
    filters: { kind: "", entity: "", owner: "", tag: "" }, results: [], active: -1, seq: 0 };
  const KNOWN_ROUTES = new Set(["", "search", "feature", "entity", "view", "ml-model", "service", "source", "model", "map", "table"]);

  // ---------------------------------------------------------------- helpers
  // ops2 (access control): a server with `auth:` tokens answers 401/403; the token is asked for once,
  // kept in this tab's sessionStorage and sent as a Bearer header with every API call.
  const TOKEN_KEY = "feature_layer.token";
  function askToken(why) {
    if (!askToken.pending) askToken.pending = Promise.resolve().then(() => {
      const t = window.prompt(why + " Enter an access token of this feature server:");
      if (t) sessionStorage.setItem(TOKEN_KEY, t.trim()); else sessionStorage.removeItem(TOKEN_KEY);
      askToken.pending = null;
      return Boolean(t);
    });
    return askToken.pending;
  }

  function authHeaders() {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    return headers;
  }

  async function api(path, retried) {
    const res = await fetch(path, { headers: authHeaders() });
    if ((res.status === 401 || res.status === 403) && !retried
        && await askToken(res.status === 401 ? "This feature server needs a token." : "Your token may not read this.")) {
      return api(path, true);
    }
    const body = await res.json().catch(() => ({}));
    if (!res.ok) {
      const e = body.error || {};
      throw new Error((e.message || res.statusText) + (e.fix ? " To fix this, " + e.fix : ""));
    }
    return body;
  }

  function toast(text) {
    const t = document.getElementById("toast");
    t.textContent = text;
    t.classList.add("show");
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.remove("show"), 1800);
  }

  function fmtNum(v) {
    if (v == null || v === "") return "—";
    if (typeof v !== "number") return esc(v);
    if (Number.isInteger(v)) return v.toLocaleString("en-US");
    const a = Math.abs(v);
    return v.toLocaleString("en-US", { maximumFractionDigits: a >= 100 ? 1 : a >= 1 ? 3 : 4 });
  }

  function fmtDuration(seconds) {
    if (seconds == null) return "—";
    const s = Math.abs(seconds);
    const units = [["d", 86400], ["h", 3600], ["m", 60], ["s", 1]];
    for (const [u, n] of units) if (s >= n) {
      const major = Math.floor(s / n);
      const rest = units.find(([, m]) => m < n);
      const minor = rest ? Math.floor((s - major * n) / rest[1]) : 0;
      return (seconds < 0 ? "-" : "") + major + u + (minor && major < 10 ? " " + minor + rest[0] : "");
    }
    return "0s";
  }

  function fmtTime(iso) {
    if (!iso) return "—";
    const d = new Date(iso);
    return isNaN(d) ? esc(iso) : d.toISOString().replace("T", " ").replace(/\.\d+Z$|Z$/, " UTC").replace(":00 UTC", " UTC");
  }

  function shortRelation(relation) {
    // schema.table reads better than database.schema.table; the full name is in the tooltip
    if (!relation) return "—";
    const parts = relation.split(".");
    return parts.length > 2 ? parts.slice(-2).join(".") : relation;
  }

  function chip(text, cls, href) {
    const inner = `<span class="chip ${cls || ""}">${esc(text)}</span>`;
    return href ? `<a class="chip-link" href="${href}">${inner}</a>` : inner;
  }

  // Highlight the query's words in the raw text, then escape each piece: matching on escaped
  // HTML would split entities (a query "amp" inside "&amp;").
  function mark(text, query) {
    const raw = String(text == null ? "" : text);
    const terms = (query || "").toLowerCase().split(/[\s,]+/).filter((t) => t.length > 0);
    if (!terms.length) return esc(raw);
    const re = new RegExp("(" + terms.map((t) => t.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|") + ")", "gi");
    return raw.split(re).map((part, i) => (i % 2 ? `<mark>${esc(part)}</mark>` : esc(part))).join("");
  }

  function freshnessPill(f) {
    if (!f) return "";
    const label = { fresh: "fresh", expired: "expired", never: "not materialized" }[f.status] || f.status;
    const title = f.newest_event_time
      ? `newest event ${fmtTime(f.newest_event_time)}; lag ${fmtDuration(f.lag_seconds)}${f.expired ? "; past its TTL: lookups answer null" : ""}`
      : "never materialized to the online store";
    return `<span class="pill pill-${esc(f.status)}" title="${esc(title)}"><i></i>${esc(label)}</span>${slaPill(f)}`;
  }

  // The view's freshness SLA verdict (dbt's warn_after / error_after on the newest materialized event).
  function slaPill(f) {
    if (!f || !f.sla) return "";
    const t = f.sla_thresholds || {};
    const parts = [t.warn_after_seconds != null ? "warn after " + fmtDuration(t.warn_after_seconds) : "",
      t.error_after_seconds != null ? "error after " + fmtDuration(t.error_after_seconds) : ""].filter(Boolean);
    const title = `freshness SLA${parts.length ? ": " + parts.join(", ") : ""}`;
    return `<span class="pill pill-sla pill-sla-${esc(f.sla)}" title="${esc(title)}"><i></i>SLA ${esc(f.sla)}</span>`;
  }

  // dbt model versions: this view's version, whether it is the latest, and links to the others.
  function versionCell(ver) {
    const others = (ver.views || []).map((name) => chip(name, name === ver.default ? "" : "mono",
      "#/view/" + encodeURIComponent(name))).join(" ");
    const latest = ver.is_latest ? ' <span class="pill pill-fresh"><i></i>latest</span>' : ` <span class="muted small">latest is v${esc(ver.latest_version)}</span>`;
    const unpinned = ver.pinned ? ` · unpinned: ${chip(ver.default, "", "#/view/" + encodeURIComponent(ver.default))}` : "";
    return `<span class="version mono">v${esc(ver.version)}</span>${latest}<div class="versions">${others}${unpinned}</div>`;
  }

  function layoutPill(layout) {
    if (!layout || !layout.stale || !layout.active) return "";  // never materialized: the freshness pill says so
    const missing = (layout.missing_features || []).join(", ");
    const title = `the online layout is older than the declaration${missing ? "; not served yet: " + missing : ""}; run feature-layer materialize`;
    return `<span class="pill pill-stale pill-layout" title="${esc(title)}"><i></i>layout stale</span>`;
  }

  async function loadCatalog() {
    if (!state.catalog) state.catalog = await api("/v1/catalog");
    return state.catalog;
  }

  async function loadMap() {
    if (!state.map) state.map = await api("/v1/map");
    return state.map;
  }

  // ---------------------------------------------------------------- addresses
  // Every page is a hash route; a page's query (search words, filters, sort) is in the hash too,
  // so any view can be shared as a link: #/search?q=chargebak&kind=feature
  const ROUTE_OF_KIND = { feature: "feature", feature_view: "view", view: "view", entity: "entity",
    ml_model: "ml-model", service: "ml-model", source: "source", seed: "source" };

  function hrefFor(kind, name, url) {
    const hash = url && url.indexOf("#/") >= 0 ? url.slice(url.indexOf("#/")) : "";
    if (hash) {
      const route = hash.slice(2).split(/[/?]/)[0];
      if (KNOWN_ROUTES.has(route)) return hash;
    }
    const route = ROUTE_OF_KIND[kind];
    return route ? `#/${route}/${encodeURIComponent(name)}` : `#/map?object=${encodeURIComponent(name)}`;
  }

  function parseHash() {
    const raw = location.hash.replace(/^#\/?/, "");
    const qi = raw.indexOf("?");
    const path = qi >= 0 ? raw.slice(0, qi) : raw;
    const params = new URLSearchParams(qi >= 0 ? raw.slice(qi + 1) : "");
    const [kind, ...rest] = path.split("/");
    return { kind: decodeURIComponent(kind || ""), arg: decodeURIComponent(rest.join("/")), params };
  }

  function setHashQuery(path, values) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(values)) if (v) params.set(k, v);
    const text = params.toString();
    const hash = "#/" + path + (text ? "?" + text : "");
    if (location.hash !== hash) history.replaceState(null, "", hash);  // no hashchange: no re-render
  }

  // ---------------------------------------------------------------- search page
  const KIND_LABEL = { feature: "feature", feature_view: "feature view", entity: "entity", ml_model: "ML model",
    source: "source", model: "model", seed: "seed" };

  function option(value, label, selected) {
    return `<option value="${esc(value)}"${selected ? " selected" : ""}>${esc(label)}</option>`;
  }

  function filterSelect(name, label, values, current, labels) {
    return `<label class="filter"><span>${label}</span><select id="filter-${name}" data-filter="${name}">` +
      option("", "Any " + label.toLowerCase(), !current) +
      values.map((v) => option(v, (labels && labels[v]) || v, v === current)).join("") + "</select></label>";
  }

  function filtersBox(inner, active) {
    // On a phone the filters start folded (the badge counts those set), so the results are above the fold.
    const phone = window.matchMedia("(max-width: 640px)").matches;
    return `<details class="filters-box" id="filters"${phone ? "" : " open"}>
      <summary>Filters${active ? ` <span class="count-badge">${active}</span>` : ""}</summary>
      <div class="filters">${inner}</div></details>`;
  }

  async function renderSearch(params) {
    const cat = await loadCatalog();
    const map = await loadMap();
    for (const k of Object.keys(state.filters)) state.filters[k] = params.get(k) || "";
    if (params.has("q") && q.value !== params.get("q")) q.value = params.get("q");
    const active = Object.values(state.filters).filter(Boolean).length;
    const sources = map.nodes.filter((n) => n.kind === "source" || n.kind === "seed");
    app.innerHTML = `
      <section class="hero">
        <div>
          <h1>Find a feature, a model, a source</h1>
          <p class="muted">${cat.features} features in ${cat.views.length} feature views over ${cat.entities.length} entities,
          ${cat.services.length} ML model${cat.services.length === 1 ? "" : "s"}, ${sources.length} sources.</p>
        </div>
        ${filtersBox(`
          ${filterSelect("kind", "Kind", Object.keys(KIND_LABEL), state.filters.kind, KIND_LABEL)}
          ${filterSelect("entity", "Entity", cat.entities.map((e) => e.name), state.filters.entity)}
          ${filterSelect("owner", "Owner", cat.owners, state.filters.owner)}
          ${filterSelect("tag", "Tag", cat.tags, state.filters.tag)}`, active)}
      </section>
      <section class="results-head"><span id="count" class="muted"></span><span id="did-you-mean"></span></section>
      <ol id="results" class="results"></ol>
      <section class="side-grid">
        <div class="card"><h3>ML models</h3><ul class="plain">${cat.services.map((s) =>
          `<li><a href="#/ml-model/${encodeURIComponent(s.name)}">${esc(s.name)}</a> <span class="muted small">${s.features.length} features${s.owner ? " · " + esc(s.owner) : ""}</span><div class="muted small clamp">${esc(s.description)}</div></li>`).join("") || '<li class="muted small">No dbt exposure of type ml lists features yet.</li>'}</ul></div>
        <div class="card"><h3>Sources</h3><ul class="plain">${sources.map((n) =>
          `<li><a href="${esc(n.url)}">${esc(n.name)}</a><div class="muted small clamp">${esc(n.description)}</div></li>`).join("")}</ul></div>
        <div class="card"><h3>Entities</h3><ul class="plain">${cat.entities.map((e) =>
          `<li><a href="#/entity/${encodeURIComponent(e.name)}">${esc(e.name)}</a> <span class="muted mono">${e.join_keys.map(esc).join(", ")}</span><div class="muted small">${esc(e.description)}</div></li>`).join("")}</ul></div>
        <div class="card"><h3>Feature views</h3><ul class="plain">${cat.views.map((v) =>
          `<li><a href="#/view/${encodeURIComponent(v.name)}">${esc(v.name)}</a> <span class="muted small">${v.features} features · ${v.entities.map(esc).join(", ")}</span><div class="muted small clamp">${esc(v.description)}</div></li>`).join("")}</ul></div>
      </section>`;
    for (const sel of app.querySelectorAll("select[data-filter]")) {
      sel.addEventListener("change", () => { state.filters[sel.dataset.filter] = sel.value; runSearch(); });
    }
    runSearch();
  }

  // /v1/search (every kind, typo-tolerant) when the server has it; else the feature search.
  async function searchApi(text) {
    const params = new URLSearchParams();
    if (text) params.set("q", text);
    for (const [k, v] of Object.entries(state.filters)) if (v) params.set(k, v);
    params.set("limit", "50");
    if (state.searchApi !== "features") {
      const res = await fetch("/v1/search?" + params.toString(), { headers: authHeaders() });
      const body = await res.json().catch(() => ({}));
      const missingRoute = res.status === 404 && (!body.error || body.error.type === "HTTPError");
      if (!missingRoute) {
        if (!res.ok) {
          const e = body.error || {};
          throw new Error((e.message || res.statusText) + (e.fix ? " To fix this, " + e.fix : ""));
        }
        state.searchApi = "search";
        const results = body.results || [];
        return { results, total: body.total != null ? body.total : results.length, took_ms: body.took_ms,
          did_you_mean: body.did_you_mean || [] };
      }
      state.searchApi = "features";  // an older server: features only
    }
    const kind = params.get("kind");
    params.delete("kind");
    if (kind && kind !== "feature") return { results: [], total: 0, did_you_mean: [], took_ms: 0 };
    const body = await api("/v1/features?" + params.toString());
    return {
      results: body.features.map((f) => ({ ...f, kind: "feature", title: f.ref })),
      total: body.total, took_ms: body.took_ms, did_you_mean: [],
    };
  }

  function splitRef(r) {
    // a feature result names the feature and titles it "view.feature" (the feature search: name = ref)
    const name = String(r.name || ""), title = String(r.title || "");
    if (r.kind !== "feature") return { title: title || name, sub: "", ref: name };
    const ref = r.ref || [title, name].find((x) => x.indexOf(".") > 0) || (r.view ? r.view + "." + name : name);
    const dot = ref.indexOf(".");
    return { title: dot > 0 ? ref.slice(dot + 1) : ref, sub: dot > 0 ? ref.slice(0, dot) : "", ref };
  }

  async function runSearch() {
    const list = document.getElementById("results");
    if (!list) return;
    const text = q.value.trim();
    setHashQuery("search", { q: text, ...state.filters });
    const seq = ++state.seq;
    let body;
    try {
      body = await searchApi(text);
    } catch (err) {
      list.innerHTML = `<li class="error">${esc(err.message)}</li>`;
      return;
    }
    if (seq !== state.seq) return; // a newer keystroke won
    state.results = body.results;
    state.active = body.results.length ? 0 : -1;
    const noun = state.searchApi === "features" ? "feature" : "result";
    document.getElementById("count").textContent =
      `${body.total} ${noun}${body.total === 1 ? "" : "s"}${text ? ` matching “${text}”` : ""}${body.took_ms != null ? ` · ${(+body.took_ms).toFixed(1)} ms` : ""}`;
    const dym = document.getElementById("did-you-mean");
    dym.innerHTML = body.did_you_mean.length ? ` · Did you mean ${body.did_you_mean.slice(0, 4).map((w) =>
      `<a href="#/search?q=${encodeURIComponent(w)}" class="dym" data-q="${esc(w)}">${esc(w)}</a>`).join(", ")}?` : "";
    for (const a of dym.querySelectorAll("a.dym")) a.addEventListener("click", (ev) => { ev.preventDefault(); q.value = a.dataset.q; runSearch(); });
    list.innerHTML = body.results.length ? body.results.map((r, i) => {
      const n = splitRef(r);
      const href = hrefFor(r.kind, n.ref, r.url);
      const tags = [...new Set([...(r.tags || []), ...(r.view_tags || [])])];
      return `
      <li class="result${i === state.active ? " active" : ""}" data-kind="${esc(r.kind)}" data-ref="${esc(n.ref)}" data-href="${esc(href)}">
        <a href="${esc(href)}">
          <div class="r-top">
            <span class="kind-badge k-${esc(r.kind)}">${esc(KIND_LABEL[r.kind] || r.kind)}</span>
            <span class="r-name mono">${mark(n.title, text)}</span>
            ${n.sub ? `<span class="r-view mono">${mark(n.sub, text)}</span>` : ""}
            ${r.dtype ? `<span class="dtype">${esc(r.dtype)}</span>` : ""}
            ${(r.matched || []).map((m) => `<span class="why">${esc(m)}</span>`).join("")}
          </div>
          <div class="r-desc">${mark(r.description || "No description.", text)}</div>
          <div class="r-meta">
            ${(r.entities || []).map((e) => chip(e, "entity")).join("")}
            ${tags.map((t) => chip("#" + t, "tag")).join("")}
            ${r.owner ? `<span class="muted small">${esc(r.owner)}</span>` : ""}
          </div>
        </a>
      </li>`;
    }).join("") : `<li class="empty">Nothing matches. Try fewer words, or clear a filter.</li>`;
  }

  function moveActive(delta) {
    const items = document.querySelectorAll("#results .result");
    if (!items.length) return;
    state.active = (state.active + delta + items.length) % items.length;
    items.forEach((el, i) => el.classList.toggle("active", i === state.active));
    items[state.active].scrollIntoView({ block: "nearest" });
  }

  // ---------------------------------------------------------------- feature page
  // "Nice" linear ticks (1, 2, 5 × 10^k) over [lo, hi]: the fallback when the payload gives none.
  function niceTicks(lo, hi, count) {
    if (!(isFinite(lo) && isFinite(hi)) || hi <= lo) return [lo];
    const raw = (hi - lo) / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((st) => st >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }

  // The ticks the statistics payload gives (numbers or {value, label}), else computed.
  function histogramTicks(stats, bins) {
    const given = stats.ticks || stats.histogram_ticks || (stats.axis && stats.axis.ticks);
    if (Array.isArray(given) && given.length) {
      // {value, label, position 0-1 along the axis} (the served statistics), or plain numbers
      return given.map((t) => (typeof t === "object" && t !== null
        ? { value: +t.value, label: t.label != null ? String(t.label) : fmtTick(+t.value), position: t.position != null ? +t.position : null }
        : { value: +t, label: fmtTick(+t), position: null })).filter((t) => isFinite(t.value));
    }
    const lo = bins[0].lo, hi = bins[bins.length - 1].hi;
    const widths = bins.map((b) => b.hi - b.lo);
    const even = widths.every((w) => Math.abs(w - widths[0]) <= 1e-9 * Math.max(1, Math.abs(widths[0])));
    if (even) return niceTicks(lo, hi, 5).map((v) => ({ value: v, label: fmtTick(v) }));
    // unequal bins (quantiles, log scale): label some of the bin edges
    const edges = [lo, ...bins.map((b) => b.hi)];
    const every = Math.max(1, Math.ceil(edges.length / 6));
    return edges.filter((_, i) => i % every === 0 || i === edges.length - 1).map((v) => ({ value: v, label: fmtTick(v) }));
  }

  function fmtTick(v) {
    const a = Math.abs(v);
    if (a >= 1e9) return (v / 1e9).toPrecision(3).replace(/\.?0+$/, "") + "G";
    if (a >= 1e6) return (v / 1e6).toPrecision(3).replace(/\.?0+$/, "") + "M";
    if (a >= 1e4) return (v / 1e3).toPrecision(3).replace(/\.?0+$/, "") + "k";
    if (a >= 100 || Number.isInteger(v)) return String(Math.round(v));
    return String(+v.toPrecision(3));
  }

  function histogramSvg(stats) {
    const bins = stats.histogram || [];
    if (!bins.length) return '<p class="muted small">No histogram for this type.</p>';
    const W = 520, Hh = 160, padL = 34, padR = 10, padB = 26, top = 8, max = Math.max(...bins.map((b) => b.count), 1);
    const plotW = W - padL - padR, plotH = Hh - padB - top;
    const bw = plotW / bins.length;
    const categorical = stats.histogram_kind === "values";
    const bars = bins.map((b, i) => {
      const h = Math.max(b.count ? 2 : 0, (b.count / max) * plotH);
      const label = categorical ? `${b.value}: ${b.count}` : `${fmtNum(b.lo)} – ${fmtNum(b.hi)}: ${b.count}`;
      const x = padL + i * bw;
      const text = categorical && bins.length <= 12
        ? `<text class="h-label" x="${x + bw / 2}" y="${Hh - 8}" text-anchor="middle">${esc(String(b.value).slice(0, Math.max(3, Math.floor(bw / 7))))}</text>` : "";
      return `<g class="bar"><rect x="${x + 1}" y="${top + plotH - h}" width="${Math.max(1, bw - 2)}" height="${h}" rx="2"><title>${esc(label)}</title></rect>${text}</g>`;
    }).join("");
    // y axis: 0, half and the tallest bar's count
    const yTicks = [0, Math.round(max / 2), max].filter((v, i, a) => a.indexOf(v) === i).map((v) => {
      const y = top + plotH - (v / max) * plotH;
      return `<g class="tick y-tick"><line class="h-grid" x1="${padL}" x2="${W - padR}" y1="${y}" y2="${y}"/><text class="h-label" x="${padL - 4}" y="${y + 3.5}" text-anchor="end">${esc(fmtTick(v))}</text></g>`;
    }).join("");
    let xTicks = "";
    if (!categorical) {
      // a value's position: linear inside the bin that holds it (every bin has the same width on screen)
      const pos = (v) => {
        if (v <= bins[0].lo) return padL;
        for (let i = 0; i < bins.length; i++) {
          const b = bins[i];
          if (v <= b.hi) return padL + (i + (b.hi > b.lo ? (v - b.lo) / (b.hi - b.lo) : 0.5)) * bw;
        }
        return padL + plotW;
      };
      const ticks = histogramTicks(stats, bins).filter((t) => t.value >= bins[0].lo - 1e-9 && t.value <= bins[bins.length - 1].hi + 1e-9);
      let lastX = -Infinity;
      xTicks = ticks.map((t) => {
        const x = t.position != null && isFinite(t.position) ? padL + Math.min(1, Math.max(0, t.position)) * plotW : pos(t.value);
        const show = x - lastX >= 34;  // labels never overlap; the tick mark stays
        if (show) lastX = x;
        return `<g class="tick x-tick" data-value="${esc(t.value)}"><line class="h-tick" x1="${x}" x2="${x}" y1="${top + plotH}" y2="${top + plotH + 4}"/>` +
          (show ? `<text class="h-label" x="${x}" y="${Hh - 8}" text-anchor="middle">${esc(t.label)}</text>` : "") + "</g>";
      }).join("");
    }
    const scale = stats.histogram_scale || stats.scale_kind || (stats.axis && stats.axis.scale);
    return `<svg class="histogram" viewBox="0 0 ${W} ${Hh}" role="img" aria-label="Histogram${scale ? " (" + esc(scale) + ")" : ""}">${yTicks}` +
      `<line class="h-axis" x1="${padL}" x2="${W - padR}" y1="${top + plotH}" y2="${top + plotH}"/>${bars}${xTicks}</svg>` +
      (scale ? `<p class="muted small">x axis: ${esc(scale)} bins</p>` : "");
  }

  function statsBlock(stats) {
    if (!stats) return '<p class="muted">Computing statistics in the warehouse…</p>';
    const cell = (k, v) => `<div class="stat"><div class="k">${k}</div><div class="v">${v}</div></div>`;
    return `<div class="stats-grid">
        ${cell("null %", stats.null_pct == null ? "—" : fmtNum(+stats.null_pct) + "%")}
        ${cell("distinct", fmtNum(stats.distinct))}
        ${cell("min", fmtNum(stats.min))}
        ${cell("max", fmtNum(stats.max))}
        ${cell("mean", fmtNum(stats.mean))}
        ${cell("rows", fmtNum(stats.rows))}
      </div>
      ${histogramSvg(stats)}
      <p class="muted small">${esc(stats.source === "on-demand" ? "Computed on demand" : "Computed at materialization")}${stats.computed_at ? " · " + fmtTime(stats.computed_at) : ""}${stats.histogram_source === "on-demand" ? " · histogram on demand" : ""}${stats.scope_label ? " · " + esc(stats.scope_label) : stats.scope ? " · " + esc(stats.scope) : ""}
      · <a href="#" id="refresh-stats">recompute</a></p>`;
  }

  // The last training set's statistics beside the served ones, with the drift (PSI) between them.
  function trainingBlock(training, drift) {
    const box = document.getElementById("training-stats");
    if (!box) return;
    if (!training) { box.innerHTML = ""; return; }
    const psi = drift && drift.psi != null ? `<span class="pill ${drift.drifted ? "pill-expired" : "pill-fresh"}" id="drift-pill"
      title="${esc(drift.method || "population stability index")}; flagged above ${esc(drift.threshold)}"><i></i>PSI ${fmtNum(drift.psi)}${drift.drifted ? " · drifted" : ""}</span>` : "";
    box.innerHTML = `<h3 class="sub">Last training set ${psi}</h3>
      <div class="stats-grid">${[["null %", training.null_pct == null ? "—" : fmtNum(+training.null_pct) + "%"], ["distinct", fmtNum(training.distinct)],
        ["min", fmtNum(training.min)], ["max", fmtNum(training.max)], ["mean", fmtNum(training.mean)], ["rows", fmtNum(training.rows)]]
        .map(([k, v]) => `<div class="stat"><div class="k">${k}</div><div class="v">${v}</div></div>`).join("")}</div>
      ${histogramSvg(training)}
      <p class="muted small">${esc(training.scope_label || training.scope || "training set")}${training.computed_at ? " · " + fmtTime(training.computed_at) : ""}</p>`;
  }

  async function loadStats(ref, refresh) {
    const box = document.getElementById("stats");
    if (!box) return;
    if (refresh) box.innerHTML = statsBlock(null);
    try {
      const body = await api(`/v1/features/${encodeURIComponent(ref)}/statistics${refresh ? "?refresh=true" : ""}`);
      box.innerHTML = statsBlock(body.statistics);
      box.dataset.loaded = "true";
      trainingBlock(body.training, body.drift);
    } catch (err) {
      box.innerHTML = `<p class="error">${esc(err.message)}</p>`;
    }
    const again = document.getElementById("refresh-stats");
    if (again) again.addEventListener("click", (ev) => { ev.preventDefault(); loadStats(ref, true); });
  }

  async function loadLineage(ref) {
    const box = document.getElementById("lineage");
    try {
      const graph = await api(`/v1/lineage/${encodeURIComponent(ref)}`);
      const sources = graph.nodes.filter((n) => n.kind === "source" || n.kind === "external").length;
      const exposures = graph.nodes.filter((n) => n.kind === "exposure").length;
      box.innerHTML = `<div class="lineage-scroll">${window.Lineage.render(graph)}</div>
        <div class="legend"><span class="lg source"></span>source column <span class="lg model"></span>model column
        <span class="lg feature"></span>this feature <span class="lg exposure"></span>ML model using it
        <span class="muted small"> · ${sources} raw column${sources === 1 ? "" : "s"}, ${exposures} ML model${exposures === 1 ? "" : "s"} · ƒ = computed (hover for SQL)</span></div>
        ${graph.warnings.length ? `<p class="warn small">${graph.warnings.map(esc).join("<br>")}</p>` : ""}`;
      box.dataset.loaded = "true";
    } catch (err) {
      box.innerHTML = `<p class="error">${esc(err.message)}</p>`;
    }
  }

  function metaRow(label, value) {
    return `<div class="meta"><dt>${label}</dt><dd>${value}</dd></div>`;
  }

  function freshnessCard(f) {
    if (!f) return "";
    if (f.status === "never") {
      return `<div class="fresh-big never">${freshnessPill(f)}<p class="muted">Not materialized to the online store yet.
        Run <code>feature-layer materialize</code>.</p></div>`;
    }
    const pct = f.ttl_seconds ? Math.min(100, (100 * f.lag_seconds) / f.ttl_seconds) : null;
    return `<div class="fresh-big">
      <div class="fresh-row"><div><div class="k">newest event materialized</div><div class="v mono">${fmtTime(f.newest_event_time)}</div></div>${freshnessPill(f)}</div>
      <div class="fresh-row"><div><div class="k">lag</div><div class="v">${fmtDuration(f.lag_seconds)}</div></div>
      <div><div class="k">TTL</div><div class="v">${f.ttl_seconds ? fmtDuration(f.ttl_seconds) : "none"}</div></div>
      <div><div class="k">materialized at</div><div class="v small">${fmtTime(f.materialized_at)}</div></div></div>
      ${f.expired ? '<p class="error expired-note">Every online value is past its TTL: lookups answer null. Materialize newer data.</p>' : ""}
      ${pct != null ? `<div class="meter" title="lag as a share of the TTL"><span data-width="${Math.max(2, pct).toFixed(2)}" class="${esc(f.status)}"></span></div>` : ""}
    </div>`;
  }

  async function renderFeature(ref) {
    app.innerHTML = '<p class="muted">Loading…</p>';
    const f = await api(`/v1/features/${encodeURIComponent(ref)}`);
    document.title = `${f.ref} · feature_layer`;
    const tags = [...new Set([...f.tags, ...f.view_tags])];
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Search</a> › <a href="#/view/${encodeURIComponent(f.view)}">${esc(f.view)}</a> › <span>${esc(f.name)}</span></nav>
      <section class="feature-head">
        <div>
          <h1 class="mono" id="feature-title">${esc(f.name)}</h1>
          <p class="lead">${esc(f.description || "No description yet — add one in the model's schema.yml.")}</p>
        </div>
        <div class="head-pills"><span class="dtype big">${esc(f.dtype)}</span>${f.online ? '<span class="pill pill-online"><i></i>online</span>' : '<span class="pill">offline only</span>'}${freshnessPill(f.freshness)}</div>
      </section>
      <section class="card meta-card"><dl class="meta-grid">
        ${metaRow("Feature view", `<a class="mono" href="#/view/${encodeURIComponent(f.view)}">${esc(f.view)}</a>`)}
        ${metaRow("Entities", f.entities.map((e) => chip(e.name + " · " + e.join_keys.join(", "), "entity", "#/entity/" + encodeURIComponent(e.name))).join(" ") || "—")}
        ${metaRow("Type", `<span class="mono">${esc(f.dtype)}</span>${f.sql_type ? ` <span class="muted mono small">${esc(f.sql_type)}</span>` : ""}`)}
        ${metaRow("TTL", esc(f.ttl || "none"))}
        ${metaRow("Owner", esc(f.owner || "—"))}
        ${metaRow("Tags", tags.map((t) => chip("#" + t, "tag")).join(" ") || "—")}
        ${metaRow("Event time", `<span class="mono">${esc(f.view_info.event_time)}</span>`)}
        ${metaRow("Table", `<span class="mono small" title="${esc(f.view_info.relation || "")}">${esc(shortRelation(f.view_info.relation))}</span>`)}
      </dl></section>
      <section class="card"><div class="card-head"><h2>Column lineage</h2><span class="muted small hide-phone">raw source columns → intermediate models → this feature → ML models</span>
          <a class="btn ghost" id="on-map" href="#/map?feature=${encodeURIComponent(f.ref)}">On the project map</a></div>
        <div id="lineage" class="lineage-box"><p class="muted">Tracing columns through the compiled SQL…</p></div></section>
      <section class="two-col">
        <div class="card"><div class="card-head"><h2>Freshness</h2></div>${freshnessCard(f.freshness)}
          <h3 class="sub">Used by</h3>${f.services.length ? `<ul class="plain" id="used-by">${f.services.map((s) => `<li>${chip(s.name, "exposure", "#/ml-model/" + encodeURIComponent(s.name))} <span class="muted small">${esc(s.description || "")}${s.owner ? " · " + esc(s.owner) : ""}</span></li>`).join("")}</ul>` : '<p class="muted small">No ML model (dbt exposure of type ml) lists this feature yet.</p>'}
        </div>
        <div class="card"><div class="card-head"><h2>Statistics</h2></div><div id="stats">${statsBlock(f.statistics)}</div><div id="training-stats"></div></div>
      </section>
      ${(f.duplicates || []).length ? `<section class="card" id="duplicates"><div class="card-head"><h2>Same computation</h2>
        <span class="muted small">the same canonical SQL over the same source columns</span></div>
        <p>${f.duplicates.map((d) => chip(d.ref, "feature mono", "#/feature/" + encodeURIComponent(d.ref))).join(" ")}</p>
        ${f.duplicates[0].expression ? `<pre class="code sql"><code>${H.sql(f.duplicates[0].expression)}</code></pre>` : ""}</section>` : ""}
      <section class="card"><div class="card-head"><h2>Use it</h2><button id="copy-snippet" class="btn" type="button">Copy snippet</button></div>
        <pre class="code" id="snippet"><code>${H.python(f.snippet)}</code></pre></section>
      <section class="card"><div class="card-head"><h2>SQL</h2>
          <div class="tabs"><button class="tab on" data-sql="compiled" type="button">compiled</button><button class="tab" data-sql="raw" type="button">source</button></div>
          <span class="muted small mono">${esc(f.view_info.file_path)}</span></div>
        <pre class="code sql" id="sql"><code>${H.sql((f.compiled_sql || f.raw_sql || "-- no SQL in the manifest; run dbt compile").trim())}</code></pre></section>`;
    document.getElementById("copy-snippet").addEventListener("click", () => copyText(f.snippet));
    for (const tab of app.querySelectorAll(".tab")) {
      tab.addEventListener("click", () => {
        app.querySelectorAll(".tab").forEach((t) => t.classList.toggle("on", t === tab));
        const sql = tab.dataset.sql === "raw" ? f.raw_sql : f.compiled_sql;
        document.querySelector("#sql code").innerHTML = H.sql((sql || "-- not available").trim());
      });
    }
    loadLineage(f.ref);
    if (f.statistics && ((f.statistics.histogram || []).length || f.statistics.histogram_source)) {
      document.getElementById("stats").dataset.loaded = "true";
      const again = document.getElementById("refresh-stats");
      if (again) again.addEventListener("click", (ev) => { ev.preventDefault(); loadStats(f.ref, true); });
    }
    loadStats(f.ref, false);  // stored ones answer at once; it also brings the training set's and the drift
  }

  async function copyText(text, buttonId) {
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (_) {
      const area = document.createElement("textarea");
      area.value = text;
      area.setAttribute("readonly", "");
      area.style.position = "fixed";
      area.style.opacity = "0";
      document.body.appendChild(area);
      area.select();
      try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
      area.remove();
    }
    const btn = document.getElementById(buttonId || "copy-snippet");
    if (btn) { btn.textContent = ok ? "Copied ✓" : "Select and copy"; btn.classList.toggle("done", ok); }
    toast(ok ? "Copied to the clipboard" : "Copy failed: select the text and press Ctrl+C");
  }

  // ---------------------------------------------------------------- entity and view pages
  function featureTable(features) {
    return `<div class="table-wrap"><table class="table"><thead><tr><th>Feature</th><th>Type</th><th>Description</th><th>Tags</th></tr></thead><tbody>` +
      features.map((f) => `<tr><td><a class="mono" href="#/feature/${encodeURIComponent(f.ref)}">${esc(f.ref)}</a></td>
        <td><span class="dtype">${esc(f.dtype)}</span></td><td>${esc(f.description)}</td>
        <td>${f.tags.map((t) => chip("#" + t, "tag")).join(" ")}</td></tr>`).join("") + "</tbody></table></div>";
  }

  async function renderEntity(name) {
    const e = await api(`/v1/entities/${encodeURIComponent(name)}`);
    const cat = await loadCatalog();
    const refs = new Set(e.features.map((f) => f.ref));
    const models = cat.services.filter((s) => s.features.some((r) => refs.has(r)));
    document.title = `${e.name} · entity · feature_layer`;
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Search</a> › entity › <span>${esc(e.name)}</span></nav>
      <section class="feature-head"><div><h1 id="entity-title">${esc(e.name)} <span class="muted small">entity</span></h1>
        <p class="lead">${esc(e.description || "No description.")}</p></div>
        <div class="head-pills">${e.join_keys.map((k) => `<span class="chip entity mono">${esc(k)}</span>`).join("")}</div></section>
      <section class="card meta-card"><dl class="meta-grid">
        ${metaRow("Used by", models.map((m) => chip(m.name, "exposure", "#/ml-model/" + encodeURIComponent(m.name))).join(" ") || "—")}
        ${metaRow("Map", `<a href="#/map?entity=${encodeURIComponent(e.name)}">its lineage on the project map</a>`)}
      </dl></section>
      <section class="card"><div class="card-head"><h2>Feature views</h2></div>
        <div class="table-wrap"><table class="table"><thead><tr><th>View</th><th>Features</th><th>TTL</th><th>Owner</th><th>Freshness</th></tr></thead><tbody>
        ${e.views.map((v) => `<tr><td><a class="mono" href="#/view/${encodeURIComponent(v.name)}">${esc(v.name)}</a><div class="muted small">${esc(v.description)}</div></td>
          <td>${v.feature_count}</td><td>${esc(v.ttl || "none")}</td><td>${esc(v.owner || "—")}</td><td>${freshnessPill(v.freshness)}${layoutPill(v.layout)}</td></tr>`).join("")}
        </tbody></table></div></section>
      <section class="card"><div class="card-head"><h2>Features</h2><span class="muted small">${e.features.length}</span></div>${featureTable(e.features)}</section>`;
  }

  async function renderView(name) {
    const v = await api(`/v1/views/${encodeURIComponent(name)}`);
    document.title = `${v.name} · feature view · feature_layer`;
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Search</a> › feature view › <span>${esc(v.name)}</span></nav>
      <section class="feature-head"><div><h1 class="mono" id="view-title">${esc(v.name)}</h1>
        <p class="lead">${esc(v.description || "No description.")}</p></div>
        <div class="head-pills">${v.online ? '<span class="pill pill-online"><i></i>online</span>' : '<span class="pill">offline only</span>'}${freshnessPill(v.freshness)}${layoutPill(v.layout)}</div></section>
      <section class="card meta-card"><dl class="meta-grid">
        ${metaRow("Entities", v.entities.map((e) => chip(e, "entity", "#/entity/" + encodeURIComponent(e))).join(" "))}
        ${metaRow("Join keys", `<span class="mono">${v.join_keys.map(esc).join(", ")}</span>`)}
        ${metaRow("Event time", `<span class="mono">${esc(v.event_time)}</span>`)}
        ${v.version ? metaRow("Version", versionCell(v.version)) : ""}
        ${metaRow("TTL", esc(v.ttl || "none"))}
        ${metaRow("Owner", esc(v.owner || "—"))}
        ${metaRow("Tags", v.tags.map((t) => chip("#" + t, "tag")).join(" ") || "—")}
        ${metaRow("Table", `<span class="mono small" title="${esc(v.relation || "")}">${esc(shortRelation(v.relation))}</span>`)}
        ${metaRow("Materialized", esc(v.materialized || "—"))}
        ${metaRow("Upstream", v.upstream.map((u) => chip(u.name, u.resource_type === "source" ? "source" : "",
          u.resource_type === "source" || u.resource_type === "seed" ? "#/source/" + encodeURIComponent(u.unique_id)
            : "#/map?object=" + encodeURIComponent(u.name))).join(" ") || "—")}
        ${metaRow("Used by", v.services.map((s) => chip(s, "exposure", "#/ml-model/" + encodeURIComponent(s))).join(" ") || "—")}
      </dl></section>
      <section class="card"><div class="card-head"><h2>Freshness</h2></div>${freshnessCard(v.freshness)}</section>
      <section class="card"><div class="card-head"><h2>Features</h2><span class="muted small">${v.features.length}</span></div>${featureTable(v.features)}</section>
      <section class="card"><div class="card-head"><h2>Columns</h2></div>
        <div class="cols">${v.columns.map((c) => `<span class="col mono">${esc(c.name)} <i>${esc(c.dtype)}</i></span>`).join("")}</div></section>
      <section class="card"><div class="card-head"><h2>SQL</h2><span class="muted small mono">${esc(v.file_path)}</span></div>
        <pre class="code sql"><code>${H.sql((v.compiled_sql || v.raw_sql || "-- not available").trim())}</code></pre></section>`;
  }

  // ---------------------------------------------------------------- ML model page
  function mapBox(id, graph, highlight) {
    return `<div class="map-box-wrap"><div class="map-tools" role="group" aria-label="Zoom">
        <button class="btn ghost sm" type="button" data-zoom="in" aria-label="Zoom in">+</button>
        <button class="btn ghost sm" type="button" data-zoom="out" aria-label="Zoom out">−</button>
        <button class="btn ghost sm" type="button" data-zoom="fit">Fit</button></div>
      <div class="map-canvas" id="${id}">${window.Lineage.renderMap(graph, highlight)}</div></div>`;
  }

  function wireZoom(container) {
    const svg = container.querySelector("svg.map");
    const zoom = window.Lineage.attachZoom(svg);
    const tools = container.parentElement.querySelector(".map-tools");
    if (zoom && tools) {
      tools.querySelector('[data-zoom="in"]').addEventListener("click", () => zoom.zoomBy(1 / 1.4));
      tools.querySelector('[data-zoom="out"]').addEventListener("click", () => zoom.zoomBy(1.4));
      tools.querySelector('[data-zoom="fit"]').addEventListener("click", () => zoom.fit());
    }
    return zoom;
  }

  const REQUEST_TABS = [["curl", "curl"], ["python_http", "Python (HTTP)"], ["python_sdk", "Python (SDK)"]];

  async function renderService(name) {
    const s = await api(`/v1/services/${encodeURIComponent(name)}`);
    document.title = `${s.name} · ML model · feature_layer`;
    const req = s.requests;
    const keyText = Object.entries(s.example.entity_row).map(([k, v]) => `${k} = ${v}`).join(", ");
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Search</a> › ML model › <span>${esc(s.name)}</span></nav>
      <section class="feature-head"><div><h1 class="mono" id="service-title">${esc(s.name)}</h1>
        <p class="lead">${esc(s.description || "No description.")}</p></div>
        <div class="head-pills"><span class="pill pill-online"><i></i>${s.features.length} features</span>
          ${s.entities.map((e) => chip(e, "entity", "#/entity/" + encodeURIComponent(e))).join("")}</div></section>
      <section class="card meta-card"><dl class="meta-grid">
        ${metaRow("Owner", esc(s.owner || "—"))}
        ${metaRow("Join keys", `<span class="mono">${s.join_keys.map(esc).join(", ")}</span>`)}
        ${metaRow("Feature views", s.views.map((v) => chip(v.name, "", "#/view/" + encodeURIComponent(v.name))).join(" "))}
        ${metaRow("Declared in", `<span class="mono small">${esc(s.file_path)}</span>`)}
      </dl></section>
      <section class="card" id="request-card"><div class="card-head"><h2>Request it</h2>
          <div class="tabs" id="request-tabs">${REQUEST_TABS.map(([k, label], i) => `<button class="tab${i ? "" : " on"}" data-req="${k}" type="button">${label}</button>`).join("")}</div>
          <button id="copy-request" class="btn" type="button">Copy</button></div>
        <p class="muted small">POST <span class="mono">/v1/online-features</span> with an example key
          (<span class="mono" id="example-key">${esc(keyText)}</span>${s.example.origin === "warehouse" ? ", the newest row in the warehouse" : ", a placeholder: put a real key in"}).</p>
        <pre class="code" id="request"><code>${esc(req.curl)}</code></pre></section>
      <section class="card"><div class="card-head"><h2>Features</h2><span class="muted small">${s.features.length}</span></div>
        <div class="table-wrap"><table class="table" id="service-features"><thead><tr><th>Feature</th><th>Type</th><th>Freshness</th><th>Description</th></tr></thead><tbody>
        ${s.features.map((f) => `<tr><td><a class="mono" href="#/feature/${encodeURIComponent(f.ref)}">${esc(f.ref)}</a></td>
          <td><span class="dtype">${esc(f.dtype)}</span></td><td><span class="pill pill-${esc(f.freshness)}"><i></i>${esc(f.freshness === "never" ? "not materialized" : f.freshness)}</span></td>
          <td>${esc(f.description)}</td></tr>`).join("")}</tbody></table></div></section>
      <section class="card"><div class="card-head"><h2>Feature views</h2></div>
        <div class="table-wrap"><table class="table"><thead><tr><th>View</th><th>Entities</th><th>TTL</th><th>Freshness</th></tr></thead><tbody>
        ${s.views.map((v) => `<tr><td><a class="mono" href="#/view/${encodeURIComponent(v.name)}">${esc(v.name)}</a></td>
          <td>${v.entities.map((e) => chip(e, "entity", "#/entity/" + encodeURIComponent(e))).join(" ")}</td><td>${esc(v.ttl || "none")}</td>
          <td>${freshnessPill(v.freshness)}${layoutPill(v.layout)} <span class="muted small">${v.freshness.lag_seconds != null ? "lag " + fmtDuration(v.freshness.lag_seconds) : ""}</span></td></tr>`).join("")}
        </tbody></table></div></section>
      <section class="card"><div class="card-head"><h2>Lineage</h2><span class="muted small hide-phone">sources → models → feature views → this ML model · drag to pan, wheel or buttons to zoom</span>
        <a class="btn ghost" href="#/map?object=${encodeURIComponent(s.name)}">On the project map</a></div>
        ${mapBox("service-lineage", s.lineage, null)}</section>`;
    wireZoom(document.getElementById("service-lineage"));
    let current = "curl";
    for (const tab of app.querySelectorAll("#request-tabs .tab")) {
      tab.addEventListener("click", () => {
        current = tab.dataset.req;
        app.querySelectorAll("#request-tabs .tab").forEach((t) => t.classList.toggle("on", t === tab));
        const text = req[current];
        document.querySelector("#request code").innerHTML = current === "curl" ? esc(text) : H.python(text);
      });
    }
    document.getElementById("copy-request").addEventListener("click", () => copyText(req[current], "copy-request"));
  }

  // ---------------------------------------------------------------- source page
  async function renderSource(name) {
    const src = await api(`/v1/sources/${encodeURIComponent(name)}`);
    document.title = `${src.name} · source · feature_layer`;
    const used = src.columns.filter((c) => c.features.length).length;
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Search</a> › ${esc(src.kind)} › <span>${esc(src.name)}</span></nav>
      <section class="feature-head"><div><h1 class="mono" id="source-title">${esc(src.name)}</h1>
        <p class="lead">${esc(src.description || "No description.")}</p></div>
        <div class="head-pills"><span class="pill">${src.columns.length} columns</span><span class="pill pill-online"><i></i>${src.features.length} features</span></div></section>
      <section class="card meta-card"><dl class="meta-grid">
        ${metaRow("Table", `<span class="mono small">${esc(src.relation || "—")}</span>`)}
        ${metaRow("Declared in", `<span class="mono small">${esc(src.file_path)}</span>`)}
        ${metaRow("Read by", src.downstream.map((d) => chip(d.name, "", "#/map?object=" + encodeURIComponent(d.name))).join(" ") || "—")}
      </dl></section>
      <section class="card"><div class="card-head"><h2>Columns</h2><span class="muted small">${used} of ${src.columns.length} feed features (column-level lineage of the compiled SQL)</span></div>
        <div class="table-wrap"><table class="table" id="source-columns"><thead><tr><th>Column</th><th>Type</th><th>Features derived from it</th></tr></thead><tbody>
        ${src.columns.map((c) => `<tr data-column="${esc(c.name)}"><td class="mono">${esc(c.name)}${c.description ? `<div class="muted small">${esc(c.description)}</div>` : ""}</td>
          <td class="mono small">${esc(c.sql_type || "—")}</td>
          <td>${c.features.length ? c.features.map((r) => `<a class="chip-link" href="#/feature/${encodeURIComponent(r)}"><span class="chip feature mono">${esc(r)}</span></a>`).join(" ") : '<span class="muted small">none</span>'}</td></tr>`).join("")}
        </tbody></table></div></section>
      <section class="card"><div class="card-head"><h2>Downstream</h2><a class="btn ghost" href="#/map?object=${encodeURIComponent(src.name)}">On the project map</a></div>
        ${mapBox("source-lineage", src.lineage, null)}</section>`;
    wireZoom(document.getElementById("source-lineage"));
  }

  // ---------------------------------------------------------------- project map
  const MAP_FILTERS = ["entity", "owner", "tag", "object", "feature"];

  /* The nodes a filter keeps: those matching it, with everything upstream and downstream. */
  function filterMap(graph, f) {
    // an entity selects its feature views (an ML model spans several entities: it follows downstream)
    const match = (n) => (!f.entity || (n.kind === "feature_view" && (n.entities || []).includes(f.entity)))
      && (!f.owner || n.owner === f.owner)
      && (!f.tag || (n.tags || []).includes(f.tag))
      && (!f.object || n.name === f.object || n.id === f.object);
    if (!f.entity && !f.owner && !f.tag && !f.object) return graph;
    const seeds = graph.nodes.filter(match).map((n) => n.id);
    const up = new Map(), down = new Map();
    for (const e of graph.edges) {
      (up.get(e.target) || up.set(e.target, []).get(e.target)).push(e.source);
      (down.get(e.source) || down.set(e.source, []).get(e.source)).push(e.target);
    }
    const keep = new Set(seeds);
    for (const dir of [up, down]) {
      const stack = [...seeds];
      while (stack.length) for (const next of dir.get(stack.pop()) || []) if (!keep.has(next)) { keep.add(next); stack.push(next); }
    }
    return { nodes: graph.nodes.filter((n) => keep.has(n.id)),
      edges: graph.edges.filter((e) => keep.has(e.source) && keep.has(e.target)) };
  }

  async function renderMapPage(params) {
    const graph = await loadMap();
    const cat = await loadCatalog();
    const f = {};
    for (const k of MAP_FILTERS) f[k] = params.get(k) || "";
    const features = cat.views.flatMap((v) => (graph.nodes.find((n) => n.name === v.name && n.kind === "feature_view") || { features: [] }).features);
    const objects = graph.nodes.map((n) => n.name).sort();
    const active = MAP_FILTERS.filter((k) => f[k]).length;
    document.title = "Project map · feature_layer";
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Search</a> › <span>project map</span></nav>
      <section class="hero"><div><h1 id="map-title">Project map</h1>
        <p class="muted" id="map-count"></p></div>
        ${filtersBox(`
          ${filterSelect("entity", "Entity", graph.entities, f.entity)}
          ${filterSelect("owner", "Owner", graph.owners, f.owner)}
          ${filterSelect("tag", "Tag", graph.tags, f.tag)}
          ${filterSelect("object", "Object", objects, f.object)}
          ${filterSelect("feature", "Column lineage of", features, f.feature)}`, active)}
      </section>
      <section class="card map-card">
        <div id="map-highlight" class="muted small"></div>
        ${mapBox("project-map", { nodes: [], edges: [] }, null)}
        <div class="legend"><span class="lg source"></span>source <span class="lg model"></span>model
          <span class="lg feature"></span>feature view <span class="lg exposure"></span>ML model
          <span class="muted small"> · drag to pan, wheel, pinch or buttons to zoom, click to open</span></div>
      </section>`;
    for (const sel of app.querySelectorAll("select[data-filter]")) {
      sel.addEventListener("change", () => { f[sel.dataset.filter] = sel.value; setHashQuery("map", f); drawMap(graph, f); });
    }
    await drawMap(graph, f);
  }

  async function drawMap(graph, f) {
    const shown = filterMap(graph, f);
    let highlight = null;
    const info = document.getElementById("map-highlight");
    if (f.feature) {
      try {
        const lin = await api(`/v1/lineage/${encodeURIComponent(f.feature)}`);
        highlight = new Map();
        for (const n of lin.nodes) {
          if (!highlight.has(n.unique_id)) highlight.set(n.unique_id, []);
          if (n.column != null) highlight.get(n.unique_id).push(n.column);
        }
        const path = lin.nodes.filter((n) => n.column != null).map((n) => `<span class="mono">${esc(n.name)}.${esc(n.column)}</span>`);
        const phone = window.matchMedia("(max-width: 640px)").matches;
        info.innerHTML = `<details${phone ? "" : " open"}><summary>Column lineage of <a class="mono" href="#/feature/${encodeURIComponent(f.feature)}">${esc(f.feature)}</a>:
          ${path.length} columns in ${highlight.size} objects, highlighted</summary>${path.join(" → ")}</details>`;
      } catch (err) {
        info.innerHTML = `<span class="error">${esc(err.message)}</span>`;
      }
    } else if (info) info.textContent = "";
    const box = document.getElementById("project-map");
    if (!box) return;
    box.innerHTML = window.Lineage.renderMap(shown, highlight);
    box.dataset.nodes = String(shown.nodes.length);
    const c = graph.counts;
    document.getElementById("map-count").textContent = shown.nodes.length === graph.nodes.length
      ? `${c.source + c.seed} sources → ${c.model} models → ${c.feature_view} feature views → ${c.ml_model} ML models`
      : `${shown.nodes.length} of ${graph.nodes.length} objects: those matching the filters, with everything upstream and downstream`;
    const tools = box.parentElement.querySelector(".map-tools");
    const fresh = tools.cloneNode(true);  // drop the previous drawing's listeners
    tools.replaceWith(fresh);
    wireZoom(box);
  }

  // ---------------------------------------------------------------- feature table
  const TABLE_COLUMNS = [
    ["ref", "Feature"], ["dtype", "Type"], ["entities", "Entities"], ["owner", "Owner"], ["tags", "Tags"],
    ["freshness", "Freshness"], ["services", "ML models"], ["description", "Description"],
  ];
  const TABLE_FILTERS = ["q", "view", "entity", "dtype", "owner", "sort", "dir"];

  function cellText(row, key) {
    const v = row[key];
    return Array.isArray(v) ? v.join(" ") : v == null ? "" : String(v);
  }

  function tableRows(rows, t) {
    const words = (t.q || "").toLowerCase().split(/\s+/).filter(Boolean);
    const out = rows.filter((r) => (!t.view || r.view === t.view) && (!t.entity || r.entities.includes(t.entity))
      && (!t.dtype || r.dtype === t.dtype) && (!t.owner || r.owner === t.owner)
      && words.every((w) => [r.ref, r.description, r.owner, r.dtype, ...r.tags, ...r.entities, ...r.services].join(" ").toLowerCase().includes(w)));
    const key = t.sort || "ref", dir = t.dir === "desc" ? -1 : 1;
    return out.sort((a, b) => dir * naturalCompare(cellText(a, key), cellText(b, key)) || naturalCompare(a.ref, b.ref));
  }

  // "txn_count_7d" before "txn_count_30d": digit runs compare as numbers, the rest by code point, ignoring case.
  function naturalCompare(a, b) {
    const x = a.toLowerCase().split(/(\d+)/), y = b.toLowerCase().split(/(\d+)/);
    for (let i = 0; i < Math.min(x.length, y.length); i++) {
      if (x[i] === y[i]) continue;
      if (i % 2) return (+x[i] - +y[i]) || (x[i] < y[i] ? -1 : 1);
      return x[i] < y[i] ? -1 : 1;
    }
    return x.length - y.length;
  }

  function csvOf(rows) {
    const cols = ["ref", "view", "name", "dtype", "sql_type", "entities", "join_keys", "owner", "tags", "online", "ttl", "freshness", "services", "description"];
    const cell = (v) => {
      const text = Array.isArray(v) ? v.join(";") : v == null ? "" : String(v);
      return /[",\n\r]/.test(text) || /^[=+\-@]/.test(text) ? `"${(/^[=+\-@]/.test(text) ? "'" : "") + text.replace(/"/g, '""')}"` : text;
    };
    return [cols.join(","), ...rows.map((r) => cols.map((c) => cell(r[c])).join(","))].join("\r\n") + "\r\n";
  }

  async function renderTable(params) {
    if (!state.table) state.table = (await api("/v1/feature-table")).features;
    const rows = state.table;
    const t = {};
    for (const k of TABLE_FILTERS) t[k] = params.get(k) || "";
    const uniq = (xs) => [...new Set(xs.filter(Boolean))].sort();
    document.title = "All features · feature_layer";
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Search</a> › <span>feature table</span></nav>
      <section class="hero"><div><h1 id="table-title">Every feature</h1><p class="muted" id="table-count"></p></div>
        ${filtersBox(`
          <label class="filter"><span>Contains</span><input id="table-q" type="search" value="${esc(t.q)}" placeholder="name, tag, owner…" autocomplete="off"></label>
          ${filterSelect("view", "Feature view", uniq(rows.map((r) => r.view)), t.view)}
          ${filterSelect("entity", "Entity", uniq(rows.flatMap((r) => r.entities)), t.entity)}
          ${filterSelect("dtype", "Type", uniq(rows.map((r) => r.dtype)), t.dtype)}
          ${filterSelect("owner", "Owner", uniq(rows.map((r) => r.owner)), t.owner)}
          <div class="filter"><span>&nbsp;</span><button id="export-csv" class="btn" type="button">Export CSV</button></div>`,
          ["q", "view", "entity", "dtype", "owner"].filter((k) => t[k]).length)}
      </section>
      <section class="card table-card"><div class="table-wrap"><table class="table dense" id="feature-table">
        <thead><tr>${TABLE_COLUMNS.map(([k, label]) => `<th aria-sort="${t.sort === k || (!t.sort && k === "ref") ? (t.dir === "desc" ? "descending" : "ascending") : "none"}"><button class="sort" type="button" data-sort="${k}">${label}</button></th>`).join("")}</tr></thead>
        <tbody></tbody></table></div></section>`;
    const draw = () => {
      const shown = tableRows(rows, t);
      setHashQuery("table", t);
      document.getElementById("table-count").textContent = `${shown.length} of ${rows.length} features · click a column to sort`;
      app.querySelectorAll("#feature-table th").forEach((th, i) => {
        const k = TABLE_COLUMNS[i][0];
        th.setAttribute("aria-sort", (t.sort || "ref") === k ? (t.dir === "desc" ? "descending" : "ascending") : "none");
      });
      app.querySelector("#feature-table tbody").innerHTML = shown.map((r) => `<tr data-ref="${esc(r.ref)}">
        <td><a class="mono" href="#/feature/${encodeURIComponent(r.ref)}">${esc(r.ref)}</a></td>
        <td><span class="dtype">${esc(r.dtype)}</span></td>
        <td>${r.entities.map((e) => chip(e, "entity", "#/entity/" + encodeURIComponent(e))).join(" ")}</td>
        <td class="small">${esc(r.owner || "—")}</td>
        <td>${r.tags.map((x) => chip("#" + x, "tag")).join(" ")}</td>
        <td>${r.freshness ? `<span class="pill pill-${esc(r.freshness)}"><i></i>${esc(r.freshness === "never" ? "not materialized" : r.freshness)}</span>` : "—"}</td>
        <td>${r.services.map((x) => chip(x, "exposure", "#/ml-model/" + encodeURIComponent(x))).join(" ")}</td>
        <td class="small">${esc(r.description)}</td></tr>`).join("") || `<tr><td colspan="${TABLE_COLUMNS.length}" class="empty">No feature matches.</td></tr>`;
      return shown;
    };
    for (const btn of app.querySelectorAll("button.sort")) {
      btn.addEventListener("click", () => {
        const k = btn.dataset.sort;
        t.dir = (t.sort || "ref") === k && t.dir !== "desc" ? "desc" : "";
        t.sort = k === "ref" && !t.dir ? "" : k;
        draw();
      });
    }
    for (const sel of app.querySelectorAll("select[data-filter]")) sel.addEventListener("change", () => { t[sel.dataset.filter] = sel.value; draw(); });
    document.getElementById("table-q").addEventListener("input", (ev) => { t.q = ev.target.value.trim(); draw(); });
    document.getElementById("export-csv").addEventListener("click", () => {
      const blob = new Blob([csvOf(tableRows(rows, t))], { type: "text/csv;charset=utf-8" });
      const a = document.createElement("a");
      a.href = URL.createObjectURL(blob);
      a.download = "features.csv";
      document.body.appendChild(a);
      a.click();
      setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 0);
      toast("Exported the table's rows as features.csv");
    });
    draw();
  }

  // ---------------------------------------------------------------- router
  async function route() {
    const { kind, arg, params } = parseHash();
    document.body.classList.remove("nav-open");
    for (const a of document.querySelectorAll("#nav a[data-route]")) a.classList.toggle("on", a.dataset.route === (kind || "search"));
    try {
      if (kind === "feature" && arg) await renderFeature(arg);
      else if (kind === "entity" && arg) await renderEntity(arg);
      else if ((kind === "view" || kind === "feature_view") && arg) await renderView(arg);
      else if ((kind === "ml-model" || kind === "ml_model" || kind === "service") && arg) await renderService(arg);
      else if (kind === "source" && arg) await renderSource(arg);
      else if (kind === "map") await renderMapPage(params);
      else if (kind === "model" && arg) await renderMapPage(new URLSearchParams({ object: arg }));
      else if (kind === "table") await renderTable(params);
      else { document.title = "feature_layer · discovery"; await renderSearch(params); }
    } catch (err) {
      app.innerHTML = `<section class="card"><h2>Something is missing</h2><p class="error">${esc(err.message)}</p><p><a href="#/">Back to search</a></p></section>`;
    }
    window.scrollTo(0, 0);
  }

  document.getElementById("nav-toggle").addEventListener("click", () => {
    const open = document.body.classList.toggle("nav-open");
    document.getElementById("nav-toggle").setAttribute("aria-expanded", String(open));
  });

  let timer = null;
  q.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      if (!document.getElementById("results")) { location.hash = "#/search?q=" + encodeURIComponent(q.value.trim()); return; }
      runSearch();
    }, 60);
  });
  function openActive() {
    const item = document.querySelectorAll("#results .result")[state.active];
    if (item) location.hash = item.dataset.href;
  }
  q.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown") { ev.preventDefault(); moveActive(1); }
    else if (ev.key === "ArrowUp") { ev.preventDefault(); moveActive(-1); }
    else if (ev.key === "Enter") {
      // Typed faster than the search debounce: search what is typed now, then open its first result
      // (opening the stale list's item, the pending search would then take the page back to search).
      if (timer !== null && document.getElementById("results")) { clearTimeout(timer); timer = null; runSearch().then(openActive); }
      else openActive();
    } else if (ev.key === "Escape") { q.value = ""; runSearch(); }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "/" && document.activeElement !== q) { ev.preventDefault(); q.focus(); q.select(); }
  });
  window.addEventListener("hashchange", route);
  route();
})();
