"""Shared by the tests in real Chromium (the system one, never `playwright install`): the browser, the
skip rule, keyboard focus by Tab, and axe-core's serious findings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

CHROMIUM = Path("/usr/bin/chromium")
REQUIRED = os.environ.get("PATRONBOT_TEST_BROWSER") == "required"
NEEDS_CHROMIUM = pytest.mark.skipif(
    not CHROMIUM.exists() and not REQUIRED,
    reason="no /usr/bin/chromium (apt-get install chromium); with PATRONBOT_TEST_BROWSER=required: fail",
)


@contextmanager
def chromium(artefacts: Path) -> Iterator[Browser]:
    """Headless system Chromium; `artefacts` (screenshots, axe reports) made first."""
    if not CHROMIUM.exists():
        pytest.fail(
            "PATRONBOT_TEST_BROWSER=required but /usr/bin/chromium is missing: apt-get install chromium"
        )
    artefacts.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield launched
        launched.close()


def focus_by_tab(page: Page, selector: str, *, limit: int = 60) -> None:
    """Press Tab until the element matching `selector` has the focus (as a keyboard user would)."""
    for _ in range(limit):
        if page.evaluate("s => document.activeElement && document.activeElement.matches(s)", selector):
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"{selector} never got the focus with Tab")


def serious(violations: list[dict[str, Any]]) -> list[str]:
    """axe-core's serious and critical findings, one line each."""
    return [
        f"{v['id']} ({v['impact']}): {[node['target'] for node in v['nodes']]}"
        for v in violations
        if v.get("impact") in {"serious", "critical"}
    ]
