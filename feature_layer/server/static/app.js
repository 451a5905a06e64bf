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
  const state = { catalog: null, filters: { entity: "", owner: "", tag: "", view: "" }, results: [], active: -1, seq: 0 };

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

  async function api(path, retried) {
    const headers = { Accept: "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const res = await fetch(path, { headers });
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
    return `<span class="pill pill-${esc(f.status)}" title="${esc(title)}"><i></i>${esc(label)}</span>`;
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

  // ---------------------------------------------------------------- search page
  function option(value, label, selected) {
    return `<option value="${esc(value)}"${selected ? " selected" : ""}>${esc(label)}</option>`;
  }

  function filterSelect(name, label, values) {
    const current = state.filters[name];
    return `<label class="filter"><span>${label}</span><select id="filter-${name}" data-filter="${name}">` +
      option("", "Any " + label.toLowerCase(), !current) +
      values.map((v) => option(v, v, v === current)).join("") + "</select></label>";
  }

  async function renderSearch() {
    const cat = await loadCatalog();
    app.innerHTML = `
      <section class="hero">
        <div>
          <h1>Find a feature</h1>
          <p class="muted">${cat.features} features in ${cat.views.length} feature views over ${cat.entities.length} entities.
          Ranked by name, then tags and entities, then descriptions.</p>
        </div>
        <div class="filters">
          ${filterSelect("entity", "Entity", cat.entities.map((e) => e.name))}
          ${filterSelect("view", "Feature view", cat.views.map((v) => v.name))}
          ${filterSelect("owner", "Owner", cat.owners)}
          ${filterSelect("tag", "Tag", cat.tags)}
        </div>
      </section>
      <section class="results-head"><span id="count" class="muted"></span></section>
      <ol id="results" class="results"></ol>
      <section class="side-grid">
        <div class="card"><h3>Entities</h3><ul class="plain">${cat.entities.map((e) =>
          `<li><a href="#/entity/${encodeURIComponent(e.name)}">${esc(e.name)}</a> <span class="muted mono">${e.join_keys.map(esc).join(", ")}</span><div class="muted small">${esc(e.description)}</div></li>`).join("")}</ul></div>
        <div class="card"><h3>Feature views</h3><ul class="plain">${cat.views.map((v) =>
          `<li><a href="#/view/${encodeURIComponent(v.name)}">${esc(v.name)}</a> <span class="muted small">${v.features} features · ${v.entities.map(esc).join(", ")}</span><div class="muted small">${esc(v.description)}</div></li>`).join("")}</ul></div>
      </section>`;
    for (const sel of app.querySelectorAll("select[data-filter]")) {
      sel.addEventListener("change", () => { state.filters[sel.dataset.filter] = sel.value; runSearch(); });
    }
    runSearch();
  }

  async function runSearch() {
    const list = document.getElementById("results");
    if (!list) return;
    const params = new URLSearchParams();
    const text = q.value.trim();
    if (text) params.set("q", text);
    for (const [k, v] of Object.entries(state.filters)) if (v) params.set(k, v);
    params.set("limit", "100");
    const seq = ++state.seq;
    let body;
    try {
      body = await api("/v1/features?" + params.toString());
    } catch (err) {
      list.innerHTML = `<li class="error">${esc(err.message)}</li>`;
      return;
    }
    if (seq !== state.seq) return; // a newer keystroke won
    state.results = body.features;
    state.active = body.features.length ? 0 : -1;
    document.getElementById("count").textContent =
      `${body.total} feature${body.total === 1 ? "" : "s"}${text ? ` matching “${text}”` : ""} · ${body.took_ms.toFixed(1)} ms`;
    list.innerHTML = body.features.length ? body.features.map((f, i) => `
      <li class="result${i === state.active ? " active" : ""}" data-ref="${esc(f.ref)}">
        <a href="#/feature/${encodeURIComponent(f.ref)}">
          <div class="r-top">
            <span class="r-name mono">${mark(f.name, text)}</span>
            <span class="r-view mono">${mark(f.view, text)}</span>
            <span class="dtype">${esc(f.dtype)}</span>
            ${(f.matched || []).map((m) => `<span class="why">${esc(m)}</span>`).join("")}
          </div>
          <div class="r-desc">${mark(f.description || "No description.", text)}</div>
          <div class="r-meta">
            ${f.entities.map((e) => chip(e, "entity")).join("")}
            ${[...new Set([...f.tags, ...f.view_tags])].map((t) => chip("#" + t, "tag")).join("")}
            ${f.owner ? `<span class="muted small">${esc(f.owner)}</span>` : ""}
          </div>
        </a>
      </li>`).join("") : `<li class="empty">No feature matches. Try fewer words, or clear a filter.</li>`;
  }

  function moveActive(delta) {
    const items = document.querySelectorAll("#results .result");
    if (!items.length) return;
    state.active = (state.active + delta + items.length) % items.length;
    items.forEach((el, i) => el.classList.toggle("active", i === state.active));
    items[state.active].scrollIntoView({ block: "nearest" });
  }

  // ---------------------------------------------------------------- feature page
  function histogramSvg(stats) {
    const bins = stats.histogram || [];
    if (!bins.length) return '<p class="muted small">No histogram for this type.</p>';
    const W = 520, Hh = 150, padL = 6, padB = 22, max = Math.max(...bins.map((b) => b.count), 1);
    const bw = (W - padL * 2) / bins.length;
    const bars = bins.map((b, i) => {
      const h = Math.max(b.count ? 2 : 0, (b.count / max) * (Hh - padB - 8));
      const label = stats.histogram_kind === "values" ? `${b.value}: ${b.count}` : `${fmtNum(b.lo)} – ${fmtNum(b.hi)}: ${b.count}`;
      const x = padL + i * bw;
      const text = stats.histogram_kind === "values" && bins.length <= 12
        ? `<text class="h-label" x="${x + bw / 2}" y="${Hh - 6}" text-anchor="middle">${esc(String(b.value).slice(0, 10))}</text>` : "";
      return `<g class="bar"><rect x="${x + 1}" y="${Hh - padB - h}" width="${Math.max(1, bw - 2)}" height="${h}" rx="2"><title>${esc(label)}</title></rect>${text}</g>`;
    }).join("");
    const axis = stats.histogram_kind === "bins"
      ? `<text class="h-label" x="${padL}" y="${Hh - 6}">${fmtNum(bins[0].lo)}</text><text class="h-label" x="${W - padL}" y="${Hh - 6}" text-anchor="end">${fmtNum(bins[bins.length - 1].hi)}</text>` : "";
    return `<svg class="histogram" viewBox="0 0 ${W} ${Hh}" role="img" aria-label="Histogram"><line class="h-axis" x1="${padL}" x2="${W - padL}" y1="${Hh - padB}" y2="${Hh - padB}"/>${bars}${axis}</svg>`;
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
      <p class="muted small">${esc(stats.source === "on-demand" ? "Computed on demand" : "Computed at materialization")}${stats.computed_at ? " · " + fmtTime(stats.computed_at) : ""}${stats.histogram_source === "on-demand" ? " · histogram on demand" : ""}${stats.scope ? " · " + esc(stats.scope) : ""}
      · <a href="#" id="refresh-stats">recompute</a></p>`;
  }

  async function loadStats(ref, refresh) {
    const box = document.getElementById("stats");
    if (!box) return;
    if (refresh) box.innerHTML = statsBlock(null);
    try {
      const body = await api(`/v1/features/${encodeURIComponent(ref)}/statistics${refresh ? "?refresh=true" : ""}`);
      box.innerHTML = statsBlock(body.statistics);
      box.dataset.loaded = "true";
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
      <nav class="crumbs"><a href="#/">Features</a> › <a href="#/view/${encodeURIComponent(f.view)}">${esc(f.view)}</a> › <span>${esc(f.name)}</span></nav>
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
      <section class="card"><div class="card-head"><h2>Column lineage</h2><span class="muted small">raw source columns → intermediate models → this feature → ML models</span></div>
        <div id="lineage" class="lineage-box"><p class="muted">Tracing columns through the compiled SQL…</p></div></section>
      <section class="two-col">
        <div class="card"><div class="card-head"><h2>Freshness</h2></div>${freshnessCard(f.freshness)}
          <h3 class="sub">Used by</h3>${f.services.length ? `<ul class="plain">${f.services.map((s) => `<li><span class="chip exposure">${esc(s.name)}</span> <span class="muted small">${esc(s.description || "")}${s.owner ? " · " + esc(s.owner) : ""}</span></li>`).join("")}</ul>` : '<p class="muted small">No ML model (dbt exposure of type ml) lists this feature yet.</p>'}
        </div>
        <div class="card"><div class="card-head"><h2>Statistics</h2></div><div id="stats">${statsBlock(f.statistics)}</div></div>
      </section>
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
    } else {
      loadStats(f.ref, false);
    }
  }

  async function copyText(text) {
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
    const btn = document.getElementById("copy-snippet");
    if (btn) { btn.textContent = ok ? "Copied ✓" : "Select and copy"; btn.classList.toggle("done", ok); }
    toast(ok ? "Snippet copied to the clipboard" : "Copy failed: select the text and press Ctrl+C");
  }

  // ---------------------------------------------------------------- entity and view pages
  function featureTable(features) {
    return `<table class="table"><thead><tr><th>Feature</th><th>Type</th><th>Description</th><th>Tags</th></tr></thead><tbody>` +
      features.map((f) => `<tr><td><a class="mono" href="#/feature/${encodeURIComponent(f.ref)}">${esc(f.ref)}</a></td>
        <td><span class="dtype">${esc(f.dtype)}</span></td><td>${esc(f.description)}</td>
        <td>${f.tags.map((t) => chip("#" + t, "tag")).join(" ")}</td></tr>`).join("") + "</tbody></table>";
  }

  async function renderEntity(name) {
    const e = await api(`/v1/entities/${encodeURIComponent(name)}`);
    document.title = `${e.name} · entity · feature_layer`;
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Features</a> › entity › <span>${esc(e.name)}</span></nav>
      <section class="feature-head"><div><h1 id="entity-title">${esc(e.name)} <span class="muted small">entity</span></h1>
        <p class="lead">${esc(e.description || "No description.")}</p></div>
        <div class="head-pills">${e.join_keys.map((k) => `<span class="chip entity mono">${esc(k)}</span>`).join("")}</div></section>
      <section class="card"><div class="card-head"><h2>Feature views</h2></div>
        <table class="table"><thead><tr><th>View</th><th>Features</th><th>TTL</th><th>Owner</th><th>Freshness</th></tr></thead><tbody>
        ${e.views.map((v) => `<tr><td><a class="mono" href="#/view/${encodeURIComponent(v.name)}">${esc(v.name)}</a><div class="muted small">${esc(v.description)}</div></td>
          <td>${v.feature_count}</td><td>${esc(v.ttl || "none")}</td><td>${esc(v.owner || "—")}</td><td>${freshnessPill(v.freshness)}${layoutPill(v.layout)}</td></tr>`).join("")}
        </tbody></table></section>
      <section class="card"><div class="card-head"><h2>Features</h2><span class="muted small">${e.features.length}</span></div>${featureTable(e.features)}</section>`;
  }

  async function renderView(name) {
    const v = await api(`/v1/views/${encodeURIComponent(name)}`);
    document.title = `${v.name} · feature view · feature_layer`;
    app.innerHTML = `
      <nav class="crumbs"><a href="#/">Features</a> › feature view › <span>${esc(v.name)}</span></nav>
      <section class="feature-head"><div><h1 class="mono" id="view-title">${esc(v.name)}</h1>
        <p class="lead">${esc(v.description || "No description.")}</p></div>
        <div class="head-pills">${v.online ? '<span class="pill pill-online"><i></i>online</span>' : '<span class="pill">offline only</span>'}${freshnessPill(v.freshness)}${layoutPill(v.layout)}</div></section>
      <section class="card meta-card"><dl class="meta-grid">
        ${metaRow("Entities", v.entities.map((e) => chip(e, "entity", "#/entity/" + encodeURIComponent(e))).join(" "))}
        ${metaRow("Join keys", `<span class="mono">${v.join_keys.map(esc).join(", ")}</span>`)}
        ${metaRow("Event time", `<span class="mono">${esc(v.event_time)}</span>`)}
        ${metaRow("TTL", esc(v.ttl || "none"))}
        ${metaRow("Owner", esc(v.owner || "—"))}
        ${metaRow("Tags", v.tags.map((t) => chip("#" + t, "tag")).join(" ") || "—")}
        ${metaRow("Table", `<span class="mono small" title="${esc(v.relation || "")}">${esc(shortRelation(v.relation))}</span>`)}
        ${metaRow("Materialized", esc(v.materialized || "—"))}
        ${metaRow("Upstream", v.upstream.map((u) => `<span class="chip">${esc(u.name)}</span>`).join(" ") || "—")}
        ${metaRow("Used by", v.services.map((s) => chip(s, "exposure")).join(" ") || "—")}
      </dl></section>
      <section class="card"><div class="card-head"><h2>Freshness</h2></div>${freshnessCard(v.freshness)}</section>
      <section class="card"><div class="card-head"><h2>Features</h2><span class="muted small">${v.features.length}</span></div>${featureTable(v.features)}</section>
      <section class="card"><div class="card-head"><h2>Columns</h2></div>
        <div class="cols">${v.columns.map((c) => `<span class="col mono">${esc(c.name)} <i>${esc(c.dtype)}</i></span>`).join("")}</div></section>
      <section class="card"><div class="card-head"><h2>SQL</h2><span class="muted small mono">${esc(v.file_path)}</span></div>
        <pre class="code sql"><code>${H.sql((v.compiled_sql || v.raw_sql || "-- not available").trim())}</code></pre></section>`;
  }

  // ---------------------------------------------------------------- router
  async function route() {
    const hash = decodeURIComponent(location.hash.replace(/^#\/?/, ""));
    const [kind, ...rest] = hash.split("/");
    const arg = rest.join("/");
    try {
      if (kind === "feature" && arg) await renderFeature(arg);
      else if (kind === "entity" && arg) await renderEntity(arg);
      else if (kind === "view" && arg) await renderView(arg);
      else { document.title = "feature_layer · feature discovery"; await renderSearch(); }
    } catch (err) {
      app.innerHTML = `<section class="card"><h2>Something is missing</h2><p class="error">${esc(err.message)}</p><p><a href="#/">Back to search</a></p></section>`;
    }
    window.scrollTo(0, 0);
  }

  let timer = null;
  q.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!document.getElementById("results")) { location.hash = "#/"; return; }
      runSearch();
    }, 60);
  });
  q.addEventListener("keydown", (ev) => {
    if (ev.key === "ArrowDown") { ev.preventDefault(); moveActive(1); }
    else if (ev.key === "ArrowUp") { ev.preventDefault(); moveActive(-1); }
    else if (ev.key === "Enter") {
      const r = state.results[state.active];
      if (r) location.hash = "#/feature/" + encodeURIComponent(r.ref);
    } else if (ev.key === "Escape") { q.value = ""; runSearch(); }
  });
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "/" && document.activeElement !== q) { ev.preventDefault(); q.focus(); q.select(); }
  });
  window.addEventListener("hashchange", route);
  route();
})();
