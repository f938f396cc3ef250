"""docs/ui.md and its screenshots agree with the pages ``make ui-screenshots`` takes."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_screenshot_is_taken_and_shown() -> None:
    spec = importlib.util.spec_from_file_location("ui_demo", ROOT / "examples" / "ui_demo.py")
    assert spec is not None
    assert spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    taken = {f"{name}.png" for name in demo.PAGES}
    stored = {path.name for path in (ROOT / "docs" / "images" / "ui").glob("*.png")}
    shown = set(re.findall(r"\(images/ui/([\w-]+\.png)\)", (ROOT / "docs" / "ui.md").read_text()))
    assert stored == taken, "run `make ui-screenshots`"
    assert shown == taken
