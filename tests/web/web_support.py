"""Helpers of the web UI tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import html
import re
import time
import weakref
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.client import Client
from tinymlaas.domain import Pipeline, RunStatus

__all__ = ["CHROMIUM", "PASSWORD", "RUN_TIMEOUT_MS", "SCREENSHOTS", "csp_violations", "log_in",
           "no_horizontal_overflow", "shot", "sign_in", "sign_up", "text_of", "user_with_runs",
           "watch_csp"]

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
SCREENSHOTS = Path(__file__).parent / "screenshots"
#: Long enough for a run on two shared, busy CPU cores.
RUN_TIMEOUT_MS = 300_000


#: Reports every Content-Security-Policy violation of the page on its console too (Chrome
#: logs most of them itself; this catches the rest with the blocked URL and directive).
_REPORT_VIOLATIONS = """
document.addEventListener("securitypolicyviolation", (e) => {
  console.error(`CSP violation: ${e.effectiveDirective} blocked ${e.blockedURI || "inline"}`
                + ` at ${e.sourceFile || ""}:${e.lineNumber || 0}`);
});
"""
_CSP_LOGS: weakref.WeakKeyDictionary[Any, list[str]] = weakref.WeakKeyDictionary()


def watch_csp(page: Any) -> list[str]:
    """Collect the page's Content-Security-Policy violations from its console, as
    ``"<page url>: <message>"``; the list fills as the page runs."""
    found: list[str] = []

    def on_console(message: Any) -> None:
        text = message.text
        if "Content Security Policy" in text or text.startswith("CSP violation:"):
            found.append(f"{page.url}: {text}")

    page.add_init_script(_REPORT_VIOLATIONS)
    page.on("console", on_console)
    _CSP_LOGS[page] = found
    return found


def watch_server_errors(page: Any) -> list[str]:
    """Collect every response of status >= 500 the page receives (documents, fetches,
    streams), as ``"<status> <method> <url>"``; the list fills as the page runs."""
    found: list[str] = []

    def on_response(response: Any) -> None:
        if response.status >= 500:
            found.append(f"{response.status} {response.request.method} {response.url}")

    page.on("response", on_response)
    return found


def csp_violations(page: Any) -> list[str]:
    """The violations :func:`watch_csp` collected on ``page`` so far (the list itself)."""
    return _CSP_LOGS[page]


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


def user_with_runs(site: Any, email: str, name: str, tmp: Path) -> dict[str, Any]:
    """Register ``email`` with a small ONNX model, the digits dataset and two finished runs;
    returns their project, run ids and model id."""
    accounts = site.studio.accounts
    user = accounts.register(email, PASSWORD, name)
    assert user is not None, f"{email} has an account already"
    ws = accounts.workspace(user)
    model = ws.add_model(write_digits_onnx(tmp / "logreg.onnx"), "logreg")
    dataset = ws.add_dataset("digits")
    runs = []
    for run_name, steps in (("fused", ["fuse"]), ("int8-dynamic", ["fuse", "quantize-dynamic"])):
        run = ws.create_run(Pipeline(name=run_name, steps=steps), model=model.id,
                            dataset=dataset.id, device="arduino-nano-33-ble-sense")
        site.studio.runs.submit_run(run)
        runs.append(run.id)
    deadline = time.monotonic() + 300
    while any(site.studio.services.get_run(r).status not in
              {RunStatus.succeeded, RunStatus.failed} for r in runs):
        assert time.monotonic() < deadline, "the fixture runs did not finish"
        time.sleep(0.5)
    assert all(site.studio.services.get_run(r).status is RunStatus.succeeded for r in runs)
    return {"project": user.default_project, "runs": runs, "model": model.id}


def sign_in(http: TestClient, email: str) -> Client:
    """An account (through the API) whose web session is ``http``'s cookie."""
    api = Client(http=http)
    api.register(email, PASSWORD, email.split("@")[0])
    api.login(email, PASSWORD)
    form = http.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert form.status_code == 200 and token
    done = http.post("/login", data={"email": email, "password": PASSWORD,
                                     "csrf_token": token.group(1)}, follow_redirects=False)
    assert done.status_code == 303, done.text[:300]
    return api


def csrf_of(http: TestClient, path: str) -> str:
    """The CSRF token a form of the page at ``path`` carries."""
    found = re.search(r'name="csrf_token" value="([^"]+)"', http.get(path).text)
    assert found, path
    return found.group(1)


def text_of(page: str) -> str:
    """The page's visible text, roughly: tags and scripts out, entities decoded."""
    page = re.sub(r"<script.*?</script>", " ", page, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page)).split())
