"""The viewer's pages through Starlette's TestClient, on every backend.

The database is written through the façades (tests/ui/seed.py), then read by an app over a
read-only engine of its own: the client runs the app on its own event loop, so the engine
must make its connections there (NullPool: none is kept across loops).
"""

from __future__ import annotations

import hashlib
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from sqlalchemy import URL, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool
from starlette.testclient import TestClient

import convostore.ui
from convostore.encryption import Keyring
from convostore.sql.engine import create_engine
from convostore.ui import create_app, read_only
from convostore.ui.security import CONTENT_SECURITY_POLICY, COOKIE
from tests.backends.encrypted import K1
from tests.cli.conftest import run_cli, url_arg
from tests.conftest import run_sync
from tests.ui.seed import (
    ADK_APP,
    AGENT,
    HOSTILE_PROJECT,
    HOSTILE_SESSION,
    HOSTILE_USER,
    OTHER_PROJECT,
    PROJECT,
    SESSION,
    long_session,
    seed,
    seed_adk,
)

ALL_PAGES = (
    "/",
    f"/sessions?project={PROJECT}",
    f"/transcript?project={PROJECT}&session={SESSION}",
    f"/sessions?project={OTHER_PROJECT}",
    f"/transcript?project={OTHER_PROJECT}&session=s-2",
    "/agents",
    f"/users?agent={AGENT}",
    f"/threads?agent={AGENT}&user=alice",
    f"/thread?agent={AGENT}&thread=t-1",
    f"/search?project={PROJECT}&q=oslo",
    f"/search?agent={AGENT}&q=invoice",
    "/stats",
    "/adk",
    f"/adk/sessions?app={ADK_APP}",
    f"/adk/session?app={ADK_APP}&user=u-1&session=adk-1",
    f"/message.json?project={PROJECT}&session={SESSION}&position=3",
    "/sessions?" + urlencode({"project": HOSTILE_PROJECT}),
    "/transcript?" + urlencode({"project": HOSTILE_PROJECT, "session": HOSTILE_SESSION}),
    "/threads?" + urlencode({"agent": AGENT, "user": HOSTILE_USER}),
    "/thread?" + urlencode({"agent": AGENT, "thread": HOSTILE_SESSION}),
)


def viewer(url: URL, *, keyring: Keyring | None = None, token: str | None = None) -> TestClient:
    engine = read_only(create_engine(url, poolclass=NullPool, encryption=keyring))
    return TestClient(create_app(engine, hosts={"testserver"}, token=token))


@pytest.fixture
def seeded(db_url: URL) -> URL:
    run_sync(seed(db_url))
    run_sync(seed_adk(db_url))
    return db_url


@pytest.fixture
def client(seeded: URL) -> Iterator[TestClient]:
    with viewer(seeded) as c:
        yield c


def get(client: TestClient, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, (path, response.status_code, response.text[:500])
    return response.text


def test_projects_sessions_and_transcript(client: TestClient) -> None:
    home = get(client, "/")
    assert PROJECT in home
    assert OTHER_PROJECT in home
    assert AGENT in home
    later = get(client, f"/?after={PROJECT}")  # the next page of projects
    assert f">{OTHER_PROJECT}</a>" in later
    assert f">{PROJECT}</a>" not in later
    sessions = get(client, f"/sessions?project={PROJECT}")
    assert "What is the weather in Oslo?" in sessions  # the preview
    assert "1200 / 345" in sessions  # tokens in / out
    assert re.search(r">4</td>", sessions)  # message count
    # The fork made at position 2 names its parent.
    assert f">{SESSION}</a> at #2" in sessions
    page = get(client, f"/transcript?project={PROJECT}&session={SESSION}")
    assert 'class="message user"' in page
    assert 'class="message assistant"' in page
    # The call and its result side by side, in one grid.
    tool = page[page.index('<div class="tool">') :]
    assert "weather" in tool[: tool.index('<div class="result">')]
    assert "4 °C, light rain" in tool[: tool.index("</article>")]
    assert '<img class="thumb" src="data:image/png;base64,' in page


def test_raw_json_of_a_message(client: TestClient) -> None:
    response = client.get(f"/message.json?project={PROJECT}&session={SESSION}&position=1")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert body["role"] == "assistant"
    assert body["content"][1] == {
        "type": "tool_use",
        "id": "call-1",
        "name": "weather",
        "input": {"city": "Oslo"},
    }
    missing = client.get(f"/message.json?project={PROJECT}&session={SESSION}&position=99")
    assert missing.status_code == 404
    assert client.get("/sessions?project=" + "x" * 5000).status_code == 400
    assert client.get("/transcript?project=x").status_code == 400  # no session
    assert client.get(f"/transcript?project={PROJECT}&session=nope").status_code == 404


def test_agent_database(client: TestClient) -> None:
    users = get(client, f"/users?agent={AGENT}")
    assert "alice" in users
    assert ">250</td>" in users
    assert ">t-1</a>" in users
    threads = get(client, f"/threads?agent={AGENT}&user=alice")
    assert "balance 250 sat" in threads
    assert ">t-1</a>" in threads
    thread = get(client, f"/thread?agent={AGENT}&thread=t-1")
    assert "requires_payment" in thread
    assert "21 sat" in thread
    assert "pay me for the forecast" in thread
    assert "lnbc1" in thread


def test_adk_sessions(client: TestClient) -> None:
    assert f">{ADK_APP}</a>" in get(client, "/adk")
    sessions = get(client, f"/adk/sessions?app={ADK_APP}")
    assert ">adk-1</a>" in sessions
    assert ">u-1</td>" in sessions
    page = get(client, f"/adk/session?app={ADK_APP}&user=u-1&session=adk-1")
    assert "Weather in Oslo?" in page
    assert "function call <code>get_forecast</code>" in page
    assert "&#34;last_city&#34;: &#34;Oslo&#34;" in page  # the session state
    assert "&#34;units&#34;: &#34;metric&#34;" in page  # user: state
    assert "&#34;model&#34;: &#34;demo&#34;" in page  # app: state
    assert page.count('<article id="m-') == 3


def test_search_links_to_the_message_in_context(client: TestClient) -> None:
    page = get(client, f"/search?project={PROJECT}&q=raining")
    link = re.search(r'href="(/transcript\?[^"]+)"', page)
    assert link is not None
    assert "<mark>raining</mark>" in page
    target = get(client, link.group(1).replace("&amp;", "&"))
    assert 'id="m-3" class="message assistant target"' in target
    hits = get(client, f"/search?agent={AGENT}&q=forecast")
    assert f"/thread?agent={AGENT}&amp;thread=t-1&amp;at=0" in hits


def test_stats(client: TestClient) -> None:
    page = get(client, "/stats")
    assert "(head)" in page
    assert "compression ratio" in page
    assert "context_messages" in page
    assert "written on append" in page


def test_every_stored_string_is_escaped(client: TestClient) -> None:
    for path in ALL_PAGES:
        body = client.get(path).text
        # As markup, not as text: the escaped forms (&lt;script, onerror=&#34;) are fine.
        for markup in ("<script", "<img src=x", 'onerror="', 'href="javascript:', 'onmouseover="'):
            assert markup not in body, (path, markup)
    for path in ALL_PAGES[-4:]:
        assert get(client, path).count("window.__pwned") >= 1, path  # shown, as text
    page = get(client, f"/transcript?project={OTHER_PROJECT}&session=s-2")
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in page


def test_security_headers_methods_and_hosts(client: TestClient) -> None:
    response = client.get("/")
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src" not in CONTENT_SECURITY_POLICY  # default-src 'none': no script
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        assert client.request(method, "/").status_code == 405
    assert client.get("/", headers={"host": "attacker.example:8765"}).status_code == 421
    assert client.get("/static/ui.css").headers["content-security-policy"]
    # Error pages carry the headers too.
    assert client.get("/nowhere").headers["content-security-policy"]


def test_token(seeded: URL) -> None:
    with viewer(seeded, token="s3cr3t-token-0123") as client:
        assert client.get("/").status_code == 401
        assert client.get("/?token=wrong").status_code == 401
        signed = client.get("/sessions?token=s3cr3t-token-0123&project=/x", follow_redirects=False)
        assert signed.status_code == 303
        assert signed.headers["location"] == "/sessions?project=%2Fx"
        assert f"{COOKIE}=s3cr3t-token-0123" in signed.headers["set-cookie"]
        assert "HttpOnly" in signed.headers["set-cookie"]
        assert client.get("/").status_code == 200  # the cookie now
        elsewhere = client.get(
            "http://testserver//attacker.example/?token=s3cr3t-token-0123", follow_redirects=False
        )
        assert elsewhere.headers["location"] == "/attacker.example/"
    with pytest.raises(ValueError, match="token"):
        viewer(seeded, token="short; Path=/")


def test_pages_of_a_long_session(db_url: URL) -> None:
    run_sync(long_session(db_url, 130))
    with viewer(db_url) as client:
        first = get(client, f"/transcript?project={PROJECT}&session=long")
        assert "message number 0<" in first
        assert "message number 49<" in first
        assert "message number 50<" not in first
        second = get(client, f"/transcript?project={PROJECT}&session=long&after=49")
        assert "message number 50<" in second
        assert "message number 99<" in second
        back = get(client, f"/transcript?project={PROJECT}&session=long&before=50")
        assert "message number 0<" in back
        assert "message number 49<" in back
        last = get(client, f"/transcript?project={PROJECT}&session=long&before=130")
        assert "message number 80<" in last
        assert "message number 129<" in last
        assert 'rel="next"' not in last
        at = get(client, f"/transcript?project={PROJECT}&session=long&at=100")
        assert 'id="m-100" class="message user target"' in at


def test_missing_key_shows_in_place(db_url: URL) -> None:
    keyring = Keyring({"k1": K1}, current="k1")
    run_sync(seed(db_url, keyring=keyring))
    run_sync(seed_adk(db_url, keyring=keyring))
    with viewer(db_url) as client:
        page = get(client, f"/transcript?project={PROJECT}&session={SESSION}")
        assert page.count("encrypted (key k1 not available)") == 4
        thread = get(client, f"/thread?agent={AGENT}&thread=t-1")
        assert "encrypted (key k1 not available)" in thread
        assert "pay me for the forecast" in thread  # the clear message text
        for path in ALL_PAGES:
            assert client.get(path).status_code == 200, path
        assert "cannot be measured" in get(client, "/stats")
        adk = get(client, f"/adk/session?app={ADK_APP}&user=u-1&session=adk-1")
        assert adk.count("encrypted (key k1 not available)") == 6  # 3 states, 3 events
    with viewer(db_url, keyring=Keyring({"k1": K1}, current=None)) as client:
        page = get(client, f"/transcript?project={PROJECT}&session={SESSION}")
        assert "not available" not in page
        assert "4 °C, light rain" in page


def test_sealed_message_text_shows_in_place(db_url: URL) -> None:
    # clear_text=False: the agent messages' text is sealed too, previews are not stored.
    run_sync(seed(db_url, keyring=Keyring({"k1": K1}, current="k1", clear_text=False)))
    with viewer(db_url) as client:
        thread = get(client, f"/thread?agent={AGENT}&thread=t-1")
        # Two messages, each with its text, content and two extras sealed.
        assert thread.count("encrypted (key k1 not available)") == 8
        assert "pay me for the forecast" not in thread
        assert "What is the weather" not in get(client, f"/sessions?project={PROJECT}")
    with viewer(db_url, keyring=Keyring({"k1": K1}, current=None)) as client:
        assert "pay me for the forecast" in get(client, f"/thread?agent={AGENT}&thread=t-1")


def test_the_engine_refuses_writes(seeded: URL) -> None:
    async def attempt() -> None:
        engine: AsyncEngine = read_only(create_engine(seeded, poolclass=NullPool))
        try:
            async with engine.begin() as conn:
                await conn.execute(text("DELETE FROM users"))
        finally:
            await engine.dispose()

    with pytest.raises(DBAPIError):
        run_sync(attempt())


@pytest.mark.sqlite
def test_browsing_leaves_the_file_byte_identical(sqlite_file: Path) -> None:
    url = URL.create("sqlite+aiosqlite", database=str(sqlite_file))
    run_sync(seed(url))
    before = hashlib.sha256(sqlite_file.read_bytes()).hexdigest()
    with viewer(url) as client:
        for path in ALL_PAGES:
            client.get(path)
    assert hashlib.sha256(sqlite_file.read_bytes()).hexdigest() == before


def test_search_pages(db_url: URL) -> None:
    run_sync(long_session(db_url, 130))
    seen: list[str] = []
    path = f"/search?project={PROJECT}&q=number"
    with viewer(db_url) as client:
        for _ in range(3):
            page = get(client, path)
            seen += re.findall(r'class="hit" href="[^"]*">long #(\d+)</a>', page)
            more = re.search(r'rel="next" href="([^"]+)"', page)
            if more is None:
                break
            path = more.group(1).replace("&amp;", "&")
    assert sorted(map(int, seen)) == list(range(130))


@pytest.mark.parametrize(
    "backend", [pytest.param("postgresql", marks=pytest.mark.postgresql)], indirect=True
)
def test_the_password_is_never_served(db_url: URL) -> None:
    # The local server trusts 127.0.0.1, so any password connects.
    url = db_url.set(password="pw-Zq81x")
    run_sync(seed(url))
    with viewer(url) as client:
        for path in ALL_PAGES:
            assert "pw-Zq81x" not in client.get(path).text, path


def test_cli_without_the_extra_names_it(monkeypatch: pytest.MonkeyPatch, sqlite_file: Path) -> None:
    # As if uvicorn were not installed and the viewer's server never imported.
    monkeypatch.delitem(sys.modules, "convostore.ui.server", raising=False)
    monkeypatch.delattr(convostore.ui, "server", raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    result = run_cli(
        "ui", "--url", url_arg(URL.create("sqlite+aiosqlite", database=str(sqlite_file)))
    )
    assert result.exit_code == 1
    assert "convostore[ui]" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
