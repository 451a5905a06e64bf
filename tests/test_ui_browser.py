"""The web UI in headless Chromium (Debian's, through Playwright): search, feature page, copy.

The server runs the real store over the dbt-built example project, materialized with the
clock pinned to the data's end. A missing Chromium fails these tests with the install
command; they never skip.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest
from server_helpers import LiveServer, open_store

from feature_layer.server.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


@pytest.fixture(scope="module")
def project(ui_project: Path) -> Path:
    return ui_project


@pytest.fixture(scope="module")
def server(ui_server):
    return ui_server


@pytest.fixture(scope="module")
def browser(ui_browser):
    return ui_browser


@pytest.fixture()
def page(browser, server):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    problems: list[str] = []
    foreign: list[str] = []
    page.on("pageerror", lambda e: problems.append(str(e)))
    # API 4xx answers are part of the UI's flow (shown to the user); a failing asset is not
    page.on("console", lambda m: problems.append(m.text)
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("response", lambda r: problems.append(f"{r.status} {r.url}")
            if r.status >= 400 and "/v1/" not in r.url else None)

    def only_local(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:  # the UI must work offline: no CDN, no fonts, no analytics
            foreign.append(route.request.url)
            route.abort()

    page.route("**/*", only_local)
    yield page
    context.close()
    assert not problems, problems
    assert not foreign, foreign


def wait_for_names(page, names: list[str]) -> None:
    """Wait until the result list shows exactly ``names`` (in order).

    Playwright's ``expect`` rather than ``wait_for_function``: the latter evaluates a string in
    the page, which the server's Content-Security-Policy (no 'unsafe-eval') rightly refuses.
    """
    from playwright.sync_api import expect

    expect(page.locator("#results .r-name")).to_have_text(names, use_inner_text=True, timeout=15_000)


def test_search_as_you_type_ranks_and_filters(page, server):
    from playwright.sync_api import expect

    from feature_layer.registry.search import search_objects

    registry = server.store.registry
    page.goto(server.url + "/")
    page.wait_for_selector("#results .result")
    everything = search_objects(registry, "", limit=500)
    expect(page.locator("#count")).to_contain_text(f"{len(everything.results)} results", timeout=15_000)
    page.locator("#q").press_sequentially("amou", delay=20)
    truth = [r.title.split(".")[-1] for r in search_objects(registry, "amou", limit=50).results]
    assert truth[0] == "amount"
    wait_for_names(page, truth)  # the page shows the server's ranking, in order
    expect(page.locator("#results mark").first).to_have_text("amou", ignore_case=True, timeout=15_000)
    page.fill("#q", "velocity")
    expect(page.locator("#results .why").first).to_have_text("tag", ignore_case=True, timeout=15_000)
    page.fill("#q", "")
    page.select_option("#filter-kind", "ml_model")
    wait_for_names(page, sorted(registry.services))
    expect(page.locator("#results .result .kind-badge").first).to_have_text("ML model", ignore_case=True)
    page.select_option("#filter-kind", "feature")
    page.select_option("#filter-entity", "merchant")
    merchant = [f.name for v in registry.views.values() if "merchant" in v.entities for f in v.features]
    expect(page.locator("#results .result")).to_have_count(len(merchant), timeout=15_000)
    page.select_option("#filter-tag", "velocity")
    page.wait_for_selector("#results .empty")
    page.select_option("#filter-entity", "")
    velocity = search_objects(registry, "", kinds=("feature",), filters={"tag": "velocity"}, limit=500).results
    expect(page.locator("#results .result")).to_have_count(len(velocity), timeout=15_000)
    assert "kind=feature" in page.url and "tag=velocity" in page.url and "entity=" not in page.url


def test_open_a_feature_and_see_lineage_statistics_and_freshness(page, server):
    page.goto(server.url + "/")
    page.fill("#q", "amount")
    from playwright.sync_api import expect

    expect(page.locator("#results .r-name").first).to_have_text("amount", use_inner_text=True)
    page.keyboard.press("Enter")
    page.wait_for_selector("#feature-title")
    assert page.locator("#feature-title").inner_text() == "amount"
    assert "Amount of this payment" in page.locator(".lead").inner_text()
    # column-level lineage as inline SVG: raw column → staging → feature → ML model
    page.wait_for_selector("#lineage[data-loaded] svg.lineage")
    svg = page.locator("#lineage svg.lineage")
    assert svg.locator('[data-node-id="source.feature_layer.raw.transactions:amount"]').count() == 1
    assert svg.locator('[data-node-id="model.feature_layer.stg_transactions:amount"]').count() == 1
    assert svg.locator(".lin-row.root").text_content().strip().startswith("amount")
    assert svg.locator('[data-unique-id="exposure.feature_layer.fraud_model_v1"]').count() == 1
    assert svg.locator("path.lin-edge").count() == 3
    # statistics stored at materialization, with a histogram
    page.wait_for_selector("#stats[data-loaded] svg.histogram")
    stats = page.locator("#stats .stats-grid").inner_text()
    truth = server.store.state.get_statistics("user_transaction_features.amount")
    assert truth is not None and f"{truth['rows']:,}" in stats and f"{round(truth['max'], 1):,}" in stats
    assert page.locator("#stats svg.histogram rect").count() == len(truth["histogram"]["counts"])
    # freshness: the newest materialized event, fresh as of the pinned clock
    fresh = page.locator(".fresh-big").inner_text()
    assert "fresh" in fresh and "2025-11-30" in fresh
    # the lag meter's width is set through the CSSOM (the CSP forbids inline style attributes)
    width = page.locator(".meter span").evaluate("e => e.style.width")
    assert width.endswith("%") and 0 < float(width[:-1]) < 100
    assert page.locator("#sql .tk-kw").count() > 5
    page.click(".tab[data-sql=raw]")
    assert "{{ ref(" in page.locator("#sql").inner_text()


def test_an_expired_view_is_shown_expired(browser, project: Path, tmp_path: Path):
    from datetime import timedelta

    from server_helpers import EXAMPLE_NOW

    store = open_store(project, EXAMPLE_NOW + timedelta(days=40))  # past the 30-day TTL of every value
    try:
        with LiveServer(create_app(store, reload_interval=None)) as live:
            page = browser.new_page()
            page.goto(live.url + "/#/view/user_transaction_features")
            page.wait_for_selector("#view-title")
            assert page.locator(".head-pills .pill-expired").inner_text().strip() == "expired"
            assert "lookups answer null" in page.locator(".fresh-big").inner_text()
            page.close()
    finally:
        store.close()


def test_copy_the_python_snippet(page, server):
    page.goto(server.url + "/#/feature/merchant_risk_features.chargeback_rate_30d")
    page.wait_for_selector("#copy-snippet")
    page.click("#copy-snippet")
    from playwright.sync_api import expect

    expect(page.locator("#copy-snippet")).to_have_text(re.compile(r"^\s*Copied"), use_inner_text=True)
    copied = page.evaluate("navigator.clipboard.readText()")
    assert 'features=["merchant_risk_features.chargeback_rate_30d"]' in copied
    assert 'entity_rows=[{"merchant_id": 1001}]' in copied
    compile(copied, "snippet", "exec")


def test_entity_and_feature_view_pages(page, server):
    page.goto(server.url + "/#/entity/merchant")
    page.wait_for_selector("#entity-title")
    assert "merchant_id" in page.locator(".head-pills").inner_text()
    page.click("text=merchant_risk_features >> nth=0")
    page.wait_for_selector("#view-title")
    assert page.locator("#view-title").inner_text() == "merchant_risk_features"
    assert page.locator(".table tbody tr").count() == 9
    assert "fraud_model_v1" in page.locator(".meta-grid").inner_text()
    page.click("text=merchant_risk_features.txn_count_7d")
    page.wait_for_selector("#feature-title")
    assert page.locator("#feature-title").inner_text() == "txn_count_7d"


def test_unknown_feature_page_explains_the_fix(page, server):
    page.goto(server.url + "/#/feature/user_transaction_features.amount_avg_7")
    page.wait_for_selector(".error")
    assert "Did you mean 'amount_avg_7d'" in page.locator(".error").inner_text()


def test_search_highlighting_never_splits_html_entities(page, project: Path, tmp_path: Path):
    """A query "amp" must highlight "s-amp-le", not the "amp" inside the escaped "&amp;"."""
    from playwright.sync_api import expect

    copy = tmp_path / "p"
    shutil.copytree(project, copy)
    description = "Share of R&D <sample> transactions & \"quoted\" ones."
    manifest = copy / "target" / "manifest.json"
    raw = json.loads(manifest.read_text())
    node = next(n for n in raw["nodes"].values() if n.get("name") == "merchant_risk_features")
    node["columns"]["had_fraud_30d"]["description"] = description
    manifest.write_text(json.dumps(raw))
    store = open_store(copy)
    try:
        with LiveServer(create_app(store, reload_interval=None)) as live:
            page.goto(live.url + "/")
            page.wait_for_selector("#results .result")
            row = page.locator("#results .result", has=page.locator(".r-name", has_text="had_fraud_30d"))
            desc = row.locator(".r-desc")
            page.fill("#q", "amp")  # also in the owners' example.com: several results
            expect(desc.locator("mark")).to_have_text(["amp"])
            expect(desc).to_have_text(description, use_inner_text=True)
            page.fill("#q", "R&D <sample>")
            expect(page.locator("#results .r-name").first).to_have_text("had_fraud_30d", timeout=15_000)
            expect(desc.locator("mark")).to_have_text(["R&D", "<sample>"])
            expect(desc).to_have_text(description, use_inner_text=True)
    finally:
        store.close()


def test_a_stale_layout_is_shown_on_the_view_page(browser, project: Path, tmp_path: Path):
    from conftest import clean_project_env, replace_in_file

    from feature_layer.dbt.runner import run_dbt

    copy = tmp_path / "p"
    shutil.copytree(project, copy)
    replace_in_file(copy / "models" / "example" / "schema.yml",
                    "        description: Seconds since the card holder's previous payment (null for the first).\n"
                    "        data_type: double\n",
                    "        description: Seconds since the card holder's previous payment (null for the first).\n"
                    "        data_type: double\n        config:\n          meta:\n            feature_layer: {feature: false}\n")
    with clean_project_env():
        run_dbt(["parse"], copy, target="duckdb", quiet=True)  # after materialization: the layout is now stale
    store = open_store(copy)
    try:
        with LiveServer(create_app(store, reload_interval=None)) as live:
            page = browser.new_page()
            page.goto(live.url + "/#/view/user_transaction_features")
            page.wait_for_selector("#view-title")
            pill = page.locator(".head-pills .pill-layout")
            assert pill.inner_text().strip() == "layout stale"
            assert "feature-layer materialize" in pill.get_attribute("title")
            from playwright.sync_api import expect

            page.goto(live.url + "/#/view/user_profile_features")
            expect(page.locator("#view-title")).to_have_text("user_profile_features", timeout=15_000)
            assert page.locator(".head-pills .pill-layout").count() == 0  # a current layout shows nothing
            page.close()
    finally:
        store.close()


def test_enter_typed_faster_than_the_search_opens_the_typed_querys_result_and_stays(page, server):
    """Enter within the search's debounce: the pending search runs first and its first result opens;
    the page stays there (the pending search used to take it back to the search page)."""
    page.goto(server.url + "/")
    page.wait_for_selector("#results .result")
    page.fill("#q", "txn_count_24h")
    page.keyboard.press("Enter")  # before the 60 ms debounce fires
    page.wait_for_selector("#feature-title")
    assert page.locator("#feature-title").inner_text() == "txn_count_24h"
    page.wait_for_timeout(400)  # longer than the debounce and a search round trip
    assert "#/search" not in page.url and page.locator("#feature-title").inner_text() == "txn_count_24h"
