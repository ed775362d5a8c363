"""Fixtures of the web UI tests: the real app served by uvicorn on a free localhost port,
Debian's chromium driven by Playwright, users signed in through the log-in form, and a
screenshot helper (PNGs in ``tests/web/screenshots/``, rewritten on every run)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from web_support import (
    CHROMIUM,
    PASSWORD,
    SCREENSHOTS,
    sign_up,
    watch_csp,
    watch_server_errors,
)

from helpers import need_service
from tinymlaas.api.deps import Studio
from tinymlaas.api.testing import serve_in_thread
from tinymlaas.config import Settings
from tinymlaas.server import create_app, open_studio


@dataclass
class Site:
    """The running app: its URL and the studio behind it (for checks from the outside)."""

    url: str
    studio: Studio


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    home = tmp_path_factory.mktemp("web") / "home"
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'meta.db'}",
                        step_timeout_s=300, step_memory_mb=4096, login_rate_limit=50)
    studio = open_studio(settings)
    app = create_app(studio=studio)
    with serve_in_thread(app) as server:
        yield Site(server.url, studio)
    studio.runs.shutdown(wait=True)
    studio.services.close()


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Headless Debian chromium; fails under CI when it or Playwright is missing."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need_service(False, "the playwright Python package")
    need_service(Path(CHROMIUM).is_file() or shutil.which("chromium") is not None,
                 f"Debian chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM if Path(CHROMIUM).is_file() else shutil.which("chromium"),
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield browser
        browser.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    print(f"\nweb UI screenshots: {SCREENSHOTS}")
    return SCREENSHOTS


@pytest.fixture
def new_page(browser: Any, site: Site) -> Iterator[Callable[..., Any]]:
    """``new_page(width=1366, height=860)``: a page in a fresh browser context (own cookies).

    Every page is watched: a Content-Security-Policy violation in its console, or a
    response of status >= 500 to anything it loads, fails the test (at teardown), so each
    page keeps working under the policy and no page the tests visit is a server error.
    """
    contexts = []
    logs: list[list[str]] = []
    errors: list[list[str]] = []

    def make(width: int = 1366, height: int = 860, **options: Any) -> Any:
        context = browser.new_context(base_url=site.url,
                                      viewport={"width": width, "height": height},
                                      accept_downloads=True, **options)
        context.set_default_timeout(30_000)
        contexts.append(context)
        page = context.new_page()
        logs.append(watch_csp(page))
        errors.append(watch_server_errors(page))
        return page

    yield make
    for context in contexts:
        context.close()
    violations = [line for log in logs for line in log]
    assert not violations, "Content-Security-Policy violations:\n" + "\n".join(violations)
    failures = [line for log in errors for line in log]
    assert not failures, "server errors (status >= 500):\n" + "\n".join(failures)


@pytest.fixture
def signed_in(new_page: Callable[..., Any]) -> Callable[..., Any]:
    """``signed_in(email)``: a page of a user who registered through the form."""

    def make(email: str, **options: Any) -> Any:
        page = new_page(**options)
        sign_up(page, email, PASSWORD)
        return page

    return make


@pytest.fixture
def http(tmp_path: Path) -> Iterator[TestClient]:
    """The app in-process on its own SQLite store (plain HTTP, no browser, no server)."""
    home = tmp_path / "home"
    settings = Settings(home=home, database_url=f"sqlite:///{home / 'meta.db'}",
                        step_timeout_s=120, step_memory_mb=4096)
    studio = open_studio(settings)
    try:
        with TestClient(create_app(studio=studio), raise_server_exceptions=False) as client:
            yield client
    finally:
        studio.runs.shutdown(wait=True)
        studio.services.close()
