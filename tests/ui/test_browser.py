"""The viewer end to end: ``convostore ui`` in a subprocess, driven in headless Chromium.

The browser is Debian's ``chromium`` (``make browser`` installs it), launched by Playwright
through ``executable_path``. Without it the tests are skipped, except with ``CI=true``,
where they fail. Every wait is on a condition (a URL printed, an element shown), never on
time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import pytest

from convostore.encryption import KEYS_ENV, Keyring
from tests.backends.encrypted import K1
from tests.conftest import in_ci
from tests.ui.seed import (
    AGENT,
    HOSTILE_PROJECT,
    HOSTILE_SESSION,
    HOSTILE_USER,
    OTHER_PROJECT,
    PROJECT,
    SESSION,
    XSS,
)
from tests.ui.viewer import LONG, Viewer, make_database

pytestmark = pytest.mark.sqlite

CHROMIUM: Final = Path(os.environ.get("CONVOSTORE_TEST_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS: Final = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _keys_env() -> str:
    import base64

    return "k1:" + base64.b64encode(K1).decode()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        reason = f"no Chromium at {CHROMIUM} (run `make browser`)"
        if in_ci():
            pytest.fail(f"CI=true requires the browser tests: {reason}", pytrace=False)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    try:
        tab = context.new_page()
        tab.set_default_timeout(15_000)
        yield tab
    finally:
        context.close()


@pytest.fixture(scope="module")
def viewer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Viewer]:
    url = make_database(tmp_path_factory.mktemp("ui") / "demo.db", long=True)
    server = Viewer(url)
    try:
        yield server
    finally:
        server.close()


def test_project_session_transcript_and_search_hit(viewer: Viewer, page: Any) -> None:
    assert viewer.base.startswith("http://127.0.0.1:")
    page.goto(viewer.base + "/")
    page.get_by_role("link", name=PROJECT, exact=True).click()
    page.wait_for_url("**/sessions?*")
    # The first column links each session (a fork's row also links its parent).
    page.locator("table.sessions td:first-child a", has_text=SESSION).click()
    page.wait_for_url("**/transcript?*")
    tool = page.locator(".tool").first
    assert "weather" in tool.locator(".call").inner_text()
    assert "4 °C, light rain" in tool.locator(".result").inner_text()
    page.get_by_role("link", name="Search", exact=True).click()
    page.select_option("select[name=project]", PROJECT)
    page.fill("input[name=q]", "raining")
    page.get_by_role("button", name="Search").click()
    page.wait_for_url("**/search?*")
    page.locator("a.hit").first.click()
    page.wait_for_url("**/transcript?*#m-3")
    target = page.locator("article.target")
    assert target.get_attribute("id") == "m-3"
    assert "raining in Oslo" in target.inner_text()


def test_paging_through_ten_thousand_messages(viewer: Viewer, page: Any) -> None:
    page.goto(f"{viewer.base}/sessions?project={PROJECT}")
    page.locator("table.sessions td:first-child a", has_text="long").click()
    page.wait_for_url("**/transcript?*")
    for first in (0, 50, 100):
        assert page.locator("article").first.get_attribute("id") == f"m-{first}"
        page.locator("a[rel=next]").first.click()
    assert page.locator("article").first.get_attribute("id") == "m-150"
    page.locator("a[rel=prev]").first.click()
    assert page.locator("article").first.get_attribute("id") == "m-100"
    page.get_by_role("link", name="last").first.click()
    assert page.locator("article").last.get_attribute("id") == f"m-{LONG - 1}"
    assert f"message number {LONG - 1}" in page.locator("article").last.inner_text()
    assert page.locator("a[rel=next]").count() == 0
    page.locator("input[name=at]").first.fill("5000")
    page.locator("input[name=at]").first.press("Enter")
    page.wait_for_url("**at=5000*")
    assert page.locator("article.target").get_attribute("id") == "m-5000"


def test_an_xss_payload_does_not_run(viewer: Viewer, page: Any) -> None:
    violations: list[str] = []
    page.on("console", lambda message: violations.append(message.text))
    page.goto(f"{viewer.base}/transcript?project={OTHER_PROJECT}&session=s-2")
    shown = page.locator("article .text").first.inner_text()
    assert shown == XSS  # the payload is there, as text
    page.locator("article .text").first.hover()
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.locator("main script, main img[src=x], a#evil").count() == 0
    # The page itself has no script, so the CSP (script blocked) has nothing to refuse.
    assert page.evaluate("document.scripts.length") == 0
    assert violations == []
    # Ids are shown too: a project, session and user named like markup.
    page.goto(viewer.base + "/")
    page.get_by_role("link", name=HOSTILE_PROJECT, exact=True).click()
    page.locator("table.sessions td:first-child a").first.click()
    page.wait_for_url("**/transcript?*")
    assert page.locator("h1").inner_text() == f"Session {HOSTILE_SESSION}"
    page.locator("article .text").first.hover()
    page.goto(viewer.base + f"/users?agent={AGENT}")
    page.get_by_role("link", name=HOSTILE_USER, exact=True).click()
    page.wait_for_url("**/threads?*")
    assert page.evaluate("typeof window.__pwned") == "undefined"
    assert page.evaluate("document.scripts.length") == 0
    assert violations == []


def test_an_encrypted_store(tmp_path: Path, page: Any) -> None:
    url = make_database(tmp_path / "sealed.db", keyring=Keyring({"k1": K1}, current="k1"))
    path = f"/transcript?project={PROJECT}&session={SESSION}"
    with_key = Viewer(url, env={KEYS_ENV: _keys_env()})
    try:
        page.goto(with_key.base + path)
        assert "4 °C, light rain" in page.locator(".tool .result").inner_text()
    finally:
        with_key.close()
    without = Viewer(url)
    try:
        page.goto(without.base + path)
        unreadable = page.locator("article .unreadable")
        assert unreadable.count() == 4
        assert unreadable.first.inner_text() == "encrypted (key k1 not available)"
    finally:
        without.close()
