"""The discovery pages in headless Chromium: search with typos, the ML model page and its
working curl request, source pages, the project map, the feature table, histograms with ticks,
and every page on a 390 px phone.

One browser and one server for the module: the real store over the dbt-built example project,
materialized with the clock pinned to the data's end. ``FEATURE_LAYER_UPDATE_SCREENSHOT=1``
rewrites the screenshots under ``docs/`` from the same run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import shlex
import shutil
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest

from feature_layer.registry.column_lineage import column_lineage
from feature_layer.server.ui_api import project_map

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

DOCS = Path(__file__).resolve().parents[1] / "docs"
SERVICE = "fraud_model_v1"
PHONE = {"width": 390, "height": 844}
TIMEOUT = 15_000


@pytest.fixture(scope="module")
def server(ui_server):
    return ui_server  # shared with test_ui_browser (tests/conftest.py): one materialization, one server


@pytest.fixture(scope="module")
def browser(ui_browser):
    return ui_browser


def _open(browser, server, viewport):
    context = browser.new_context(viewport=viewport, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    problems: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and "/v1/" not in r.url else None)

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:  # no CDN, no fonts, no analytics
            problems.append("foreign request " + route.request.url)
            route.abort()

    page.route("**/*", only_local)
    return context, page, problems


@pytest.fixture()
def page(browser, server):
    context, page, problems = _open(browser, server, {"width": 1280, "height": 900})
    yield page
    context.close()
    assert not problems, problems


@pytest.fixture()
def phone(browser, server):
    context, page, problems = _open(browser, server, PHONE)
    yield page
    context.close()
    assert not problems, problems


def _expect():
    from playwright.sync_api import expect

    return expect


# ---------------------------------------------------------------- search
def test_a_typo_finds_the_feature_and_the_search_is_a_link(page, server):
    expect = _expect()
    page.goto(server.url + "/")
    page.wait_for_selector("#results .result")
    page.locator("#q").press_sequentially("chargebak", delay=15)
    # the whole word's results, not a prefix's still on screen (each keystroke searches after 60 ms)
    expect(page.locator("#count")).to_contain_text("matching “chargebak”", timeout=TIMEOUT)
    first = page.locator("#results .result").first
    expect(first).to_have_attribute("data-ref", "merchant_risk_features.chargeback_rate_30d", timeout=TIMEOUT)
    expect(first).to_have_attribute("data-kind", "feature")
    assert "q=chargebak" in page.url  # the query is in the address: the search can be shared
    shared = page.url
    page.goto(server.url + "/#/table")
    page.wait_for_selector("#feature-table tbody tr")
    page.goto(shared)
    expect(page.locator("#q")).to_have_value("chargebak", timeout=TIMEOUT)
    expect(page.locator("#results .result").first).to_have_attribute(
        "data-ref", "merchant_risk_features.chargeback_rate_30d", timeout=TIMEOUT)
    suggestion = page.locator("#did-you-mean a").first  # the word matched only as a typo: say what it meant
    expect(suggestion).to_have_text("chargeback", timeout=TIMEOUT)
    first.locator("a").click()
    expect(page.locator("#feature-title")).to_have_text("chargeback_rate_30d", timeout=TIMEOUT)
    page.go_back()
    page.locator("#did-you-mean a").first.click()
    expect(page.locator("#q")).to_have_value("chargeback", timeout=TIMEOUT)
    assert "q=chargeback" in page.url


def test_filters_are_in_the_address(page, server):
    expect = _expect()
    page.goto(server.url + "/#/search?entity=merchant&tag=velocity")
    expect(page.locator("#filter-entity")).to_have_value("merchant", timeout=TIMEOUT)
    expect(page.locator("#filter-tag")).to_have_value("velocity")
    page.wait_for_selector("#results .empty")
    page.select_option("#filter-tag", "")
    page.wait_for_selector("#results .result")
    assert "entity=merchant" in page.url and "tag=" not in page.url


# ---------------------------------------------------------------- ML model and source pages
def _curl_parts(text: str) -> tuple[str, dict]:
    words = shlex.split(text.replace("\\\n", " "))
    assert words[0] == "curl" and words[words.index("-X") + 1] == "POST"
    return words[words.index("-X") + 2], json.loads(words[words.index("-d") + 1])


def test_the_ml_model_page_shows_a_curl_request_that_works(page, server):
    expect = _expect()
    # linked both ways: feature page → ML model page → feature page
    page.goto(server.url + "/#/feature/merchant_risk_features.chargeback_rate_30d")
    page.locator("#used-by a", has_text=SERVICE).click()
    expect(page.locator("#service-title")).to_have_text(SERVICE, timeout=TIMEOUT)
    service = server.store.registry.services[SERVICE]
    rows = page.locator("#service-features tbody tr")
    expect(rows).to_have_count(len(service.features))
    assert page.locator("#service-features .pill-fresh").count() == len(service.features)
    url, body = _curl_parts(page.locator("#request").inner_text())
    assert url == server.url + "/v1/online-features"
    assert body["service"] == SERVICE and set(body["entity_rows"][0]) == {"user_id", "merchant_id"}
    # the request, exactly as shown, through the real server
    answer = httpx.post(url, json=body, timeout=10)
    assert answer.status_code == 200, answer.text
    values = answer.json()
    reference = server.store.get_online_features(service=SERVICE, entity_rows=body["entity_rows"]).to_dict()
    assert list(values) == list(reference)
    assert values["chargeback_rate_30d"] == pytest.approx(reference["chargeback_rate_30d"])
    assert values["chargeback_rate_30d"][0] is not None  # a real key: it has values
    # copy gives the same text; the Python tab runs as shown
    page.click("#copy-request")
    expect(page.locator("#copy-request")).to_have_text("Copied ✓", timeout=TIMEOUT)
    assert _curl_parts(page.evaluate("navigator.clipboard.readText()")) == (url, body)
    page.click('#request-tabs [data-req="python_http"]')
    code = page.locator("#request").inner_text()
    printed = io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(printed):
        exec(compile(code, "python_http", "exec"), {})  # noqa: S102 - the page's own snippet, run as a user would
    assert "chargeback_rate_30d" in printed.getvalue()
    # its lineage: the whole upstream of the exposure
    page.wait_for_selector("#service-lineage svg.map")
    drawn = {page.locator("#service-lineage .map-node").nth(i).get_attribute("data-id")
             for i in range(page.locator("#service-lineage .map-node").count())}
    assert {"source.feature_layer.raw.transactions", service.unique_id} <= drawn
    page.locator("#service-features a", has_text="merchant_risk_features.category").click()
    expect(page.locator("#feature-title")).to_have_text("category", timeout=TIMEOUT)


def test_entity_and_view_pages_link_to_the_ml_models_using_them(page, server):
    expect = _expect()
    page.goto(server.url + "/#/entity/merchant")
    page.wait_for_selector("#entity-title")
    page.locator(".meta-grid a", has_text=SERVICE).click()
    expect(page.locator("#service-title")).to_have_text(SERVICE, timeout=TIMEOUT)
    page.goto(server.url + "/#/view/user_profile_features")
    page.wait_for_selector("#view-title")
    page.locator(".meta-grid a", has_text="stg_users").click()  # an upstream model → the map, focused on it
    expect(page.locator("#filter-object")).to_have_value("stg_users", timeout=TIMEOUT)
    expect(page.locator('#project-map .map-node[data-id="source.feature_layer.raw.users"]')).to_have_count(1)
    page.locator('#project-map .map-node[data-id="source.feature_layer.raw.users"]').click()
    expect(page.locator("#source-title")).to_have_text("raw.users", timeout=TIMEOUT)


def test_a_view_with_a_freshness_sla_shows_its_verdict_as_a_badge(page, server):
    """The badge says what the API's SLA verdict is (ops: freshness.sla), and only where one is declared."""
    expect = _expect()
    for view in ("merchant_risk_features", "user_profile_features"):
        freshness = httpx.get(f"{server.url}/v1/views/{view}", timeout=30).json()["freshness"]
        page.goto(f"{server.url}/#/view/{view}")
        page.wait_for_selector("#view-title")
        badge = page.locator(".head-pills .pill-sla")
        if freshness.get("sla") is None:
            expect(badge).to_have_count(0)
            continue
        assert view == "merchant_risk_features" and freshness["sla"] in ("pass", "warn", "error")
        expect(badge).to_have_text(f"SLA {freshness['sla']}", timeout=TIMEOUT)
        assert "error after 2d" in badge.get_attribute("title")
    assert page.locator("#view-title").inner_text() == "user_profile_features"


def test_a_source_page_lists_the_features_of_each_column(page, server):
    expect = _expect()
    page.goto(server.url + "/#/feature/user_transaction_features.amount")
    page.wait_for_selector("#lineage[data-loaded] svg.lineage")
    page.locator('#lineage [data-unique-id="source.feature_layer.raw.transactions"] a.lin-link').click()
    expect(page.locator("#source-title")).to_have_text("raw.transactions", timeout=TIMEOUT)
    row = page.locator('#source-columns tr[data-column="amount"]')
    chips = row.locator(".chip")
    shown = set(chips.all_inner_texts())
    truth = {f.ref for f in server.store.registry._features.values()  # noqa: SLF001
             if any(n.unique_id == "source.feature_layer.raw.transactions" and n.column == "amount"
                    for n in column_lineage(server.store.registry, f.ref).nodes)}
    assert shown == truth and "user_transaction_features.amount" in shown
    row.locator("a", has_text="user_transaction_features.amount_max_30d").click()
    expect(page.locator("#feature-title")).to_have_text("amount_max_30d", timeout=TIMEOUT)


# ---------------------------------------------------------------- project map
def _drawn(page) -> set[str]:
    nodes = page.locator("#project-map .map-node")
    return {nodes.nth(i).get_attribute("data-id") for i in range(nodes.count())}


def test_the_project_map_renders_filters_zooms_and_highlights(page, server):
    expect = _expect()
    registry = server.store.registry
    graph = project_map(registry)
    page.goto(server.url + "/#/map")
    page.wait_for_selector("#project-map svg.map")
    assert _drawn(page) == {n["id"] for n in graph["nodes"]}
    assert page.locator("#project-map .map-edge").count() == len(graph["edges"])
    # filter by entity: the merchant's feature views with everything up- and downstream of them
    page.select_option("#filter-entity", "merchant")
    seeds = {v.unique_id for v in registry.views.values() if "merchant" in v.entities}
    keep = set(seeds)
    for seed in seeds:
        keep |= {uid for uid in graph_ids(graph) if _reaches(registry, seed, uid) or _reaches(registry, uid, seed)}
    expect(page.locator("#project-map .map-node")).to_have_count(len(keep), timeout=TIMEOUT)
    assert _drawn(page) == keep and "model.feature_layer.user_profile_features" not in keep
    assert "entity=merchant" in page.url
    page.select_option("#filter-entity", "")
    page.select_option("#filter-owner", graph["owners"][0])
    page.select_option("#filter-owner", "")
    page.select_option("#filter-object", "stg_users")
    expect(page.locator("#project-map .map-node")).to_have_count(
        len({uid for uid in graph_ids(graph) if _reaches(registry, "model.feature_layer.stg_users", uid)
             or _reaches(registry, uid, "model.feature_layer.stg_users")}), timeout=TIMEOUT)
    page.select_option("#filter-object", "")
    # the column lineage of a feature, highlighted
    ref = "merchant_risk_features.chargeback_rate_30d"
    page.select_option("#filter-feature", ref)
    page.wait_for_selector("#project-map .map-node.hl")
    lit = {page.locator("#project-map .map-node.hl").nth(i).get_attribute("data-id")
           for i in range(page.locator("#project-map .map-node.hl").count())}
    lineage = column_lineage(registry, ref)
    assert lit == {n.unique_id for n in lineage.nodes}
    assert "chargeback_rate_30d" in page.locator("#map-highlight").inner_text()
    assert page.locator('#project-map .map-node.hl[data-id="source.feature_layer.raw.chargebacks"] .map-col').count() >= 1
    # zoom and pan move the view box
    svg = page.locator("#project-map svg.map")
    before = svg.get_attribute("viewBox")
    page.click('.map-tools [data-zoom="in"]')
    zoomed = svg.get_attribute("viewBox")
    assert float(zoomed.split()[2]) < float(before.split()[2])
    box = svg.bounding_box()
    page.mouse.move(box["x"] + 200, box["y"] + 200)
    page.mouse.down()
    page.mouse.move(box["x"] + 300, box["y"] + 260, steps=5)
    page.mouse.up()
    panned = svg.get_attribute("viewBox")
    assert float(panned.split()[0]) < float(zoomed.split()[0]) and panned.split()[2] == zoomed.split()[2]
    page.click('.map-tools [data-zoom="fit"]')
    page.locator('#project-map .map-node[data-id="exposure.feature_layer.fraud_model_v1"]').click()
    expect(page.locator("#service-title")).to_have_text(SERVICE, timeout=TIMEOUT)


def graph_ids(graph: dict) -> set[str]:
    return {n["id"] for n in graph["nodes"]}


def _reaches(registry, start: str, goal: str) -> bool:
    """Whether ``goal`` is ``start`` or downstream of it (dbt's child map, brute force)."""
    stack, seen = [start], {start}
    while stack:
        uid = stack.pop()
        if uid == goal:
            return True
        for child in registry.child_map.get(uid, ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return False


# ---------------------------------------------------------------- feature table
def natural(text: str) -> list:
    """The table's sort key: digit runs as numbers (7d before 30d), the rest by code point, ignoring case."""
    parts = re.split(r"(\d+)", text.lower())
    return [(int(p), p) if i % 2 else p for i, p in enumerate(parts)]


def _column(page, index: int) -> list[str]:
    return page.locator(f"#feature-table tbody tr td:nth-child({index})").all_inner_texts()


def test_the_feature_table_sorts_filters_and_exports(page, server):
    expect = _expect()
    features = list(server.store.registry._features.values())  # noqa: SLF001
    page.goto(server.url + "/#/table")
    rows = page.locator("#feature-table tbody tr")
    expect(rows).to_have_count(len(features), timeout=TIMEOUT)
    assert _column(page, 1) == sorted((f.ref for f in features), key=natural)
    page.click('button.sort[data-sort="dtype"]')
    by_type = sorted(features, key=lambda f: (natural(f.dtype), natural(f.ref)))
    assert _column(page, 1) == [f.ref for f in by_type] and len({f.dtype for f in features}) > 2
    page.click('button.sort[data-sort="dtype"]')
    by_type_desc = sorted(features, key=lambda f: natural(f.ref))
    by_type_desc.sort(key=lambda f: natural(f.dtype), reverse=True)  # stable: ties keep the ref order
    assert _column(page, 1) == [f.ref for f in by_type_desc]
    assert page.locator('#feature-table th[aria-sort="descending"] button').get_attribute("data-sort") == "dtype"
    page.select_option("#filter-entity", "merchant")
    merchant = {f.ref for f in features if "merchant" in server.store.registry.views[f.view].entities}
    expect(rows).to_have_count(len(merchant))
    page.fill("#table-q", "chargeback")
    chosen = sorted(r for r in merchant if "chargeback" in r or "chargeback" in
                    server.store.registry.feature(r).description.lower())
    expect(rows).to_have_count(len(chosen))
    assert "entity=merchant" in page.url and "q=chargeback" in page.url and "sort=dtype" in page.url
    with page.expect_download() as download:
        page.click("#export-csv")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    exported = list(csv.DictReader(io.StringIO(text)))
    assert [r["ref"] for r in exported] == _column(page, 1)
    assert sorted(r["ref"] for r in exported) == chosen
    rate = next(r for r in exported if r["ref"] == "merchant_risk_features.chargeback_rate_30d")
    assert rate["services"] == SERVICE and rate["dtype"] == "float64" and rate["entities"] == "merchant"
    page.reload()  # the address keeps the table's state
    expect(rows).to_have_count(len(chosen), timeout=TIMEOUT)
    expect(page.locator("#table-q")).to_have_value("chargeback")


# ---------------------------------------------------------------- statistics
def test_the_histogram_has_axis_ticks(page, server):
    page.goto(server.url + "/#/feature/user_transaction_features.amount")
    page.wait_for_selector("#stats[data-loaded] svg.histogram")
    stats = httpx.get(server.url + "/v1/features/user_transaction_features.amount/statistics").json()["statistics"]
    bins = stats["histogram"]
    ticks = page.locator("#stats svg.histogram .x-tick")
    values = [float(ticks.nth(i).get_attribute("data-value")) for i in range(ticks.count())]
    assert len(values) >= 3 and values == sorted(values)
    assert bins[0]["lo"] - 1e-9 <= values[0] and values[-1] <= bins[-1]["hi"] + 1e-9
    given = stats.get("ticks") or stats.get("histogram_ticks") or (stats.get("axis") or {}).get("ticks")
    if given:  # the payload's own ticks, when it gives them
        expected = [float(t["value"] if isinstance(t, dict) else t) for t in given]
        assert values == pytest.approx([v for v in expected if bins[0]["lo"] - 1e-9 <= v <= bins[-1]["hi"] + 1e-9])
    labels = page.locator("#stats svg.histogram .x-tick text").all_text_contents()
    assert len(labels) >= 3 and all(label.strip() for label in labels)
    assert page.locator("#stats svg.histogram .y-tick text").count() >= 2
    # a categorical feature: labelled bars, no numeric axis
    page.goto(server.url + "/#/feature/merchant_risk_features.category")
    page.wait_for_selector("#stats[data-loaded] svg.histogram")
    assert page.locator("#stats svg.histogram .x-tick").count() == 0
    assert page.locator("#stats svg.histogram .bar text").count() >= 3


# ---------------------------------------------------------------- phones
PAGES = [
    ("search", "/#/search?q=amount", "#results .result"),
    ("feature", "/#/feature/merchant_risk_features.chargeback_rate_30d", "#lineage[data-loaded] svg.lineage"),
    ("view", "/#/view/user_transaction_features", "#view-title"),
    ("entity", "/#/entity/merchant", "#entity-title"),
    ("ml_model", f"/#/ml-model/{SERVICE}", "#service-lineage svg.map"),
    ("source", "/#/source/raw.transactions", "#source-columns"),
    ("map", "/#/map?feature=merchant_risk_features.chargeback_rate_30d", "#project-map .map-node.hl"),
    ("table", "/#/table", "#feature-table tbody tr"),
]

# Badges (chips, pills, type tags) inside the viewport and not clipped by their own box.
CUT_BADGES = """() => [...document.querySelectorAll('.chip, .pill, .dtype, .kind-badge, .why')]
  .filter((e) => e.offsetParent !== null && !e.closest('.table-wrap') && !e.closest('pre'))
  .filter((e) => { const r = e.getBoundingClientRect();
    return r.left < -0.5 || r.right > window.innerWidth + 0.5 || e.scrollWidth > e.clientWidth + 1; })
  .map((e) => e.textContent.trim())"""
CUT_IN_TABLES = """() => [...document.querySelectorAll('.table-wrap')].filter((w) => w.scrollWidth > w.clientWidth + 1)
  .map((w) => w.querySelector('table') && w.querySelector('table').id)"""


@pytest.mark.parametrize(("name", "path", "ready"), PAGES, ids=[p[0] for p in PAGES])
def test_every_page_fits_a_phone(phone, server, name, path, ready):
    expect = _expect()
    phone.goto(server.url + path)
    phone.wait_for_selector(ready, timeout=TIMEOUT)
    phone.wait_for_timeout(150)  # late layout (fonts, the map's fit)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.evaluate(CUT_BADGES) == []
    assert phone.evaluate(CUT_IN_TABLES) == []  # tables stack on a phone: nothing hides to the right
    # the navigation collapses behind a menu button
    nav = phone.locator("#nav")
    expect(nav).to_be_hidden()
    phone.click("#nav-toggle")
    expect(nav).to_be_visible()
    expect(phone.locator("#nav a", has_text="Project map")).to_be_visible()
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    phone.click("#nav-toggle")
    expect(nav).to_be_hidden()
    if name in ("search", "table", "map"):  # folded filters keep the results above the fold
        assert phone.locator("#filters").get_attribute("open") is None
        first = {"search": "#results .result", "table": "#feature-table tbody tr", "map": "#project-map"}[name]
        assert phone.locator(first).first.bounding_box()["y"] < PHONE["height"] * 0.6
    if name == "feature":  # the lineage graph keeps its size and scrolls, rather than shrinking
        svg = phone.locator("#lineage svg.lineage")
        assert svg.bounding_box()["width"] >= float(svg.get_attribute("width")) - 1
        scroller = phone.locator("#lineage .lineage-scroll")
        assert scroller.evaluate("e => e.scrollWidth > e.clientWidth && getComputedStyle(e).overflowX")
    if name in ("map", "ml_model"):  # the map opens at a readable scale
        canvas = "#project-map" if name == "map" else "#service-lineage"
        svg = phone.locator(f"{canvas} svg.map")
        scale = svg.bounding_box()["width"] / float(svg.get_attribute("viewBox").split()[2])
        assert scale >= 0.69


# ---------------------------------------------------------------- screenshots for the docs
SHOTS = [
    ("ui_search.png", "/#/search?q=chargebak", "#results .result", None),
    ("ui_ml_model.png", f"/#/ml-model/{SERVICE}", "#service-lineage svg.map", None),
    ("ui_map.png", "/#/map?feature=merchant_risk_features.chargeback_rate_30d", "#project-map .map-node.hl", None),
    ("ui_table.png", "/#/table?entity=merchant", "#feature-table tbody tr", None),
    ("ui_phone_search.png", "/#/search?q=chargebak", "#results .result", PHONE),
    ("ui_phone_ml_model.png", f"/#/ml-model/{SERVICE}", "#request", PHONE),
    ("ui_phone_map.png", "/#/map?feature=merchant_risk_features.chargeback_rate_30d", "#project-map .map-node.hl", PHONE),
]


def test_screenshots_of_the_discovery_pages(browser, server, tmp_path: Path):
    update = bool(os.environ.get("FEATURE_LAYER_UPDATE_SCREENSHOT"))
    for file, path, ready, viewport in SHOTS:
        context = browser.new_context(viewport=viewport or {"width": 1280, "height": 860}, device_scale_factor=1)
        page = context.new_page()
        page.goto(server.url + path)
        page.wait_for_selector(ready, timeout=TIMEOUT)
        page.wait_for_timeout(200)
        shot = tmp_path / file
        page.screenshot(path=str(shot), full_page=False)
        assert shot.stat().st_size > 15_000, file
        if update:
            DOCS.mkdir(exist_ok=True)
            shutil.copy2(shot, DOCS / file)
        context.close()
