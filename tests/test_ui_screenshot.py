"""The feature page of the dbt-built, materialized example project, as users first see it.

Renders the page in headless Chromium and checks what the screenshot in the docs shows.
``FEATURE_LAYER_UPDATE_SCREENSHOT=1 pytest tests/test_ui_screenshot.py`` rewrites
``docs/feature_page.png`` from the same run.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from server_helpers import LiveServer

from feature_layer.server.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

DOCS_SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "feature_page.png"
FEATURE = "merchant_risk_features.chargeback_rate_30d"


def test_feature_page_of_the_example_project(built_example_project: Path, fixture_now, tmp_path: Path, monkeypatch,
                                            ui_browser):
    from feature_layer import FeatureStore
    from feature_layer.clock import FixedClock

    project = tmp_path / "fraud"
    shutil.copytree(built_example_project, project, ignore=shutil.ignore_patterns(".feature_layer", "logs"))
    monkeypatch.chdir(project)  # the snippet names the project as the user would: "."
    store = FeatureStore(project, clock=FixedClock(fixture_now))  # the data's end, never today
    store.materialize()
    try:
        with LiveServer(create_app(store, reload_interval=None)) as server:
            page = ui_browser.new_page(viewport={"width": 1280, "height": 1000}, device_scale_factor=1)
            page.goto(f"{server.url}/#/feature/{FEATURE}")
            page.wait_for_selector("#lineage[data-loaded] svg.lineage")
            page.wait_for_selector("#stats svg.histogram")
            svg = page.locator("#lineage svg.lineage")
            for source in ("raw.chargebacks", "raw.merchants", "raw.transactions"):
                assert svg.locator(f'[data-unique-id="source.feature_layer.{source}"]').count() == 1
            assert svg.locator('[data-unique-id="exposure.feature_layer.fraud_model_v1"]').count() == 1
            assert "Computed at materialization" in page.locator("#stats").inner_text()
            assert page.locator(".fresh-big .pill:not(.pill-sla)").inner_text() == "fresh"  # newest value within its 2-day TTL
            assert 'FeatureStore(".")' in page.locator("#snippet").inner_text()
            shot = tmp_path / "feature_page.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 50_000
            if os.environ.get("FEATURE_LAYER_UPDATE_SCREENSHOT"):
                DOCS_SCREENSHOT.parent.mkdir(exist_ok=True)
                shutil.copy2(shot, DOCS_SCREENSHOT)
            page.close()
    finally:
        store.close()
