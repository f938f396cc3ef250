"""A demo database for ``convostore ui``, and the screenshots of docs/ui.md taken from it.

    python examples/ui_demo.py demo.db                    # write the demo database
    convostore ui --url demo.db                           # and browse it
    python examples/ui_demo.py demo.db --screenshots docs/images/ui   # `make ui-screenshots`

The screenshots are taken in headless Chromium (Debian's ``chromium``, ``make browser``)
through Playwright, from ``convostore ui`` run on a free port.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path

from convostore import ContextMessage, SQLAlchemyContextStore, SQLAlchemyDatabase, connect

PROJECT = "/home/ana/weather-bot"
CHROMIUM = os.environ.get("CONVOSTORE_CHROMIUM", "/usr/bin/chromium")
PAGES = {
    "sessions": f"/sessions?project={PROJECT}",
    "transcript": f"/transcript?project={PROJECT}&session=oslo-trip",
    "search": f"/search?project={PROJECT}&q=umbrella",
    "thread": "/thread?agent=shop-bot&thread=order-17",
    "stats": "/stats",
}


def turn(question: str, city: str, report: str, answer: str, n: int) -> list[ContextMessage]:
    """A user question, a tool call, its result and the answer."""
    call = f"call-{n}"
    return [
        ContextMessage(role="user", content=[{"type": "text", "text": question}]),
        ContextMessage(
            role="assistant",
            content=[
                {"type": "text", "text": f"Let me check the forecast for {city}."},
                {
                    "type": "tool_use",
                    "id": call,
                    "name": "get_forecast",
                    "input": {"city": city, "days": 2},
                },
            ],
        ),
        ContextMessage(
            role="user",
            content=[{"type": "tool_result", "tool_use_id": call, "content": report}],
        ),
        ContextMessage(role="assistant", content=[{"type": "text", "text": answer}]),
    ]


async def write(path: Path) -> None:
    """The demo conversations: a project with three sessions (one forked), a paying user."""
    engine = await connect(f"sqlite+aiosqlite:///{path}", migrate=True)
    try:
        trip = SQLAlchemyContextStore(engine, project=PROJECT, session_id="oslo-trip")
        await trip.append_many(
            turn(
                "I'm in Oslo tomorrow. Do I need an umbrella?",
                "Oslo",
                "Tomorrow: 6 °C, rain from 10:00 to 16:00, wind 5 m/s.",
                "Yes, take an umbrella: rain is expected from 10:00 until 16:00.",
                1,
            )
            + turn(
                "And in Bergen on Friday?",
                "Bergen",
                "Friday: 8 °C, showers all day.",
                "Bergen will be wet all Friday: the umbrella stays in the bag.",
                2,
            )
        )
        await trip.add_context_tokens(2310, 412)
        await trip.fork(at=4)
        daily = SQLAlchemyContextStore(engine, project=PROJECT, session_id="daily-brief")
        await daily.append_many(
            turn(
                "Morning brief for Trondheim, please.",
                "Trondheim",
                "Today: -2 °C, clear, sunrise 09:01.",
                "Clear and cold in Trondheim today (-2 °C); no umbrella needed.",
                3,
            )
        )
        await daily.add_context_tokens(980, 120)
        other = SQLAlchemyContextStore(engine, project="/home/ana/notes", session_id="n-1")
        await other.append(ContextMessage(role="user", content=[{"type": "text", "text": "hi"}]))
        shop = SQLAlchemyDatabase(engine=engine, agent_name="shop-bot")
        await shop.credit("ana", 1500)
        await shop.set_current_thread_id("ana", "order-17")
        await shop.add_message("order-17", "ana", "user", message="Two forecasts for Norway.")
        await shop.add_message(
            "order-17",
            "ana",
            "agent",
            message="That is 40 sat: pay this invoice.",
            kind="requires_payment",
            satoshis=40,
            extra_outputs={"invoice": "lnbc400n1demo"},
        )
        await shop.add_message("order-17", "ana", "user", message="Paid.", kind="request")
        await shop.add_message(
            "order-17", "ana", "agent", message="Thanks! Forecasts sent.", kind="final_response"
        )
    finally:
        await engine.dispose()


def screenshots(path: Path, out: Path) -> None:
    """One PNG per page of :data:`PAGES`, from ``convostore ui`` in Chromium."""
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "convostore.cli", "ui", "--url", str(path), "--port", "0"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert server.stdout is not None
        base = next(
            line.split()[2].rstrip("/")
            for line in server.stdout
            if line.startswith("convostore ui: ")
        )
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=CHROMIUM,
                args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
            )
            tab = browser.new_page(viewport={"width": 1100, "height": 720})
            for name, page in PAGES.items():
                tab.goto(base + page)
                tab.screenshot(path=str(out / f"{name}.png"))
                print(out / f"{name}.png")
            browser.close()
    finally:
        server.terminate()
        server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("database", type=Path)
    parser.add_argument("--screenshots", type=Path, metavar="DIR")
    args = parser.parse_args()
    args.database.unlink(missing_ok=True)
    asyncio.run(write(args.database))
    if args.screenshots is not None:
        screenshots(args.database, args.screenshots)


if __name__ == "__main__":
    main()
