"""The web UI against a server with access tokens, in headless Chromium (Debian's, via Playwright):
it asks for the token once, keeps it in sessionStorage and sends it as a Bearer header."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from server_helpers import LiveServer, materialized_copy, open_store

from feature_layer.access import token_hash
from feature_layer.server.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]
TOKEN = "ui-token-0123456789abcdef"


@pytest.fixture(scope="module")
def server(built_example_project: Path, tmp_path_factory: pytest.TempPathFactory):
    root = materialized_copy(built_example_project, tmp_path_factory.mktemp("ui-auth") / "project")
    block = {"tokens": [{"name": "analyst", "sha256": token_hash(TOKEN), "scopes": ["registry:read"]}]}
    (root / "feature_layer.yml").write_text(yaml.safe_dump({"auth": block}))
    store = open_store(root)
    with LiveServer(create_app(store, reload_interval=None)) as live:
        yield live
    store.close()


def test_the_ui_asks_for_a_token_once_and_sends_it_with_every_call(server, ui_browser):
    from playwright.sync_api import expect

    context = ui_browser.new_context()  # the session's one Chromium (tests/conftest.py), a fresh tab state
    try:
        page = context.new_page()
        prompts: list[str] = []
        page.on("dialog", lambda d: (prompts.append(d.message), d.accept(TOKEN)))
        sent: list[tuple[str, str | None]] = []
        page.on("request", lambda r: sent.append((r.url, r.headers.get("authorization")))
                if "/v1/" in r.url else None)
        page.goto(server.url + "/")
        summary = page.locator(".hero p")  # the catalog's counts: read with the token
        expect(summary).to_contain_text("31 features", timeout=15_000)
        assert len(prompts) == 1 and "token" in prompts[0]
        assert page.evaluate("sessionStorage.getItem('feature_layer.token')") == TOKEN
        page.reload()  # same tab: the stored token is sent, nothing is asked
        expect(summary).to_contain_text("31 features", timeout=15_000)
        assert len(prompts) == 1
        later = sent[-2:]
        assert later and all(auth == f"Bearer {TOKEN}" for _, auth in later), later
    finally:
        context.close()
