"""Where the tests find the repository and its files, from any folder of tests/."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
DATA = TESTS / "data"
DEMO_ASSETS = REPO / "demo" / "assets"
