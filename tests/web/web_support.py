"""Helpers of the web UI tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "PASSWORD", "RUN_TIMEOUT_MS", "SCREENSHOTS", "log_in",
           "no_horizontal_overflow", "shot", "sign_up"]

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).parent / "screenshots"
#: Long enough for a run on two shared, busy CPU cores.
RUN_TIMEOUT_MS = 300_000


def shot(page: Any, name: str) -> Path:
    """Save a full-page screenshot for people to look at."""
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def sign_up(page: Any, email: str, password: str, name: str = "") -> str:
    """Register through the form; returns the id of the user's own project."""
    page.goto("/register")
    page.get_by_label("Name").fill(name or email.split("@")[0].title())
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Register").click()
    page.wait_for_url(re.compile(r"/login\?registered=true$"))
    page.get_by_label("Email").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    page.wait_for_url(re.compile(r"/projects/proj-[0-9a-f]+$"))
    return page.url.rsplit("/", 1)[1]


def no_horizontal_overflow(page: Any) -> tuple[int, int]:
    """(scroll width, viewport width) of the document."""
    return page.evaluate("[document.documentElement.scrollWidth, "
                         "document.documentElement.clientWidth]")


def log_in(page: Any, email: str, password: str = PASSWORD) -> None:
    """Log in through the form with the keyboard only (labels, tab order, Enter)."""
    page.goto("/login")
    page.get_by_label("Email").focus()
    page.keyboard.type(email)
    page.keyboard.press("Tab")
    page.keyboard.type(password)
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/projects"))
