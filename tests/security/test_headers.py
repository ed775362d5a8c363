"""Browser-hardening headers, checked on a real server: every HTML page (signed out, signed
in, error pages, the API docs) carries a Content-Security-Policy with no inline script, no
framing, ``nosniff``, a same-origin referrer and opener policy and a Permissions-Policy;
every other response (JSON, errors, files, static assets, server-sent events) carries
``nosniff`` and a policy that lets nothing load. The pages' HTML holds no inline script or
event handler, so the policy costs them nothing (the browser side of this is in
``tests/web/test_web_security.py``). HSTS is sent over HTTPS only."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from security_support import API, PASSWORD, Server, finished
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse, StreamingResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from tinymlaas.api.middleware import SecurityHeaders
from tinymlaas.client import Client

#: What every page's policy must say, directive by directive.
PAGE_POLICY = {"default-src": "'self'", "script-src": "'self'", "object-src": "'none'",
               "base-uri": "'self'", "form-action": "'self'", "frame-ancestors": "'none'"}


def policy(response: httpx.Response) -> dict[str, str]:
    header = response.headers.get("content-security-policy", "")
    directives = [part.strip().split(None, 1) for part in header.split(";") if part.strip()]
    return {d[0]: d[1] if len(d) > 1 else "" for d in directives}


def assert_common(response: httpx.Response, what: str) -> None:
    headers = response.headers
    assert headers.get("x-content-type-options") == "nosniff", what
    assert headers.get("x-frame-options") == "DENY", what
    assert headers.get("referrer-policy") in {"no-referrer", "same-origin"}, what
    assert headers.get("cross-origin-opener-policy") == "same-origin", what
    assert "camera=()" in headers.get("permissions-policy", ""), what
    assert "strict-transport-security" not in headers, f"{what}: HSTS over plain HTTP"
    assert len(headers.get_list("content-security-policy")) == 1, what


class _Scripts(HTMLParser):
    """Every way a page could run inline code: script elements without ``src`` (other than
    JSON data blocks), ``on*`` handler attributes, ``javascript:`` URLs."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.sources: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            if values.get("src"):
                self.sources.append(values["src"] or "")
            elif values.get("type") != "application/json":
                self.inline.append(self.get_starttag_text() or tag)
        for name, value in attrs:
            if name.startswith("on"):
                self.inline.append(f"<{tag} {name}=...>")
            if name in {"href", "src", "action", "formaction"} and value \
                    and value.strip().lower().startswith("javascript:"):
                self.inline.append(f"<{tag} {name}={value}>")


def assert_page(response: httpx.Response, path: str, status: int = 200) -> None:
    assert response.status_code == status, (path, response.status_code, response.text[:300])
    assert response.headers["content-type"].startswith("text/html"), path
    assert_common(response, path)
    found = policy(response)
    for directive, sources in PAGE_POLICY.items():
        assert found.get(directive) == sources, (path, directive, found)
    assert "'unsafe-eval'" not in response.headers["content-security-policy"], path
    scripts = _Scripts()
    scripts.feed(response.text)
    assert scripts.inline == [], (path, scripts.inline)
    assert all(src.startswith("/") and not src.startswith("//") for src in scripts.sources), \
        (path, scripts.sources)


def assert_not_a_page(response: httpx.Response, what: str) -> None:
    assert_common(response, what)
    assert policy(response) == {"default-src": "'none'", "frame-ancestors": "'none'",
                                "base-uri": "'none'", "form-action": "'none'"}, what


def web_session(server: Server, email: str) -> httpx.Client:
    """Signed in through the log-in form, as a browser would be (session cookie)."""
    web = httpx.Client(base_url=server.url, timeout=60)
    form = web.get("/login")
    assert_page(form, "/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert token, "the log-in form has no CSRF token"
    done = web.post("/login", data={"email": email, "password": PASSWORD,
                                    "csrf_token": token.group(1)})
    assert done.status_code == 303, done.text[:300]
    assert_common(done, "POST /login")
    return web


@pytest.fixture
def workspace(server: Server, alice: Client, tiny_onnx: Path) -> dict[str, str]:
    """alice's model, the digits dataset and two finished runs."""
    model = alice.upload_model(tiny_onnx, name="logreg").id
    dataset = alice.add_builtin_dataset("digits").id
    runs = [alice.create_run(model, dataset, pipeline={"steps": steps}, name=name).id
            for name, steps in (("fused", ["fuse"]), ("fp16", ["fuse", "fp16"]))]
    progress = [e for e in alice.events(runs[0]) if e[0] == "progress"]
    assert progress, "no progress event came through the event stream"
    for run in runs:
        assert finished(alice, run).status == "succeeded"
    return {"project": alice.me().default_project, "model": model, "dataset": dataset,
            "first": runs[0], "second": runs[1]}


def test_every_page_carries_the_headers(server: Server, alice: Client,
                                        workspace: dict[str, str]) -> None:
    anonymous = httpx.Client(base_url=server.url, timeout=60)
    for path in ("/login", "/register", f"{API}/docs", f"{API}/redoc"):
        assert_page(anonymous.get(path), path)
    redirect = anonymous.get("/projects")
    assert redirect.status_code == 303 and "/login" in redirect.headers["location"]
    assert_common(redirect, "redirect to /login")

    web = web_session(server, "alice@example.com")
    project, first, second = workspace["project"], workspace["first"], workspace["second"]
    for path in ("/projects", f"/projects/{project}", f"/projects/{project}/runs/new",
                 f"/runs/{first}", f"/runs/{first}/body", "/models", "/datasets", "/devices",
                 "/transformers", f"/projects/{project}/compare?run={first}&run={second}",
                 f"{API}/docs", f"{API}/redoc"):
        assert_page(web.get(path), path)
    assert 'id="compare-figures"' in web.get(
        f"/projects/{project}/compare?run={first}&run={second}").text
    # error pages are pages too
    assert_page(web.get("/runs/run-0000000000"), "missing run", status=404)
    assert_page(web.get(f"/projects/{project}/compare?run={first}"), "bad compare",
                status=400)


def test_other_responses_are_nosniff_and_load_nothing(server: Server, alice: Client,
                                                      workspace: dict[str, str]) -> None:
    api = server.raw(alice)
    anonymous = server.raw()
    responses = {
        "health": anonymous.get(f"{API}/health"),
        "openapi": anonymous.get(f"{API}/openapi.json"),
        "me": api.get(f"{API}/users/me"),
        "models": api.get(f"{API}/models"),
        "401": anonymous.get(f"{API}/models"),
        "404": api.get(f"{API}/no-such-thing"),
        "422": api.post(f"{API}/runs", json={"model": 3}),
        "NUL": api.get(f"{API}/models/%00"),
        "model file": api.get(f"{API}/models/{workspace['model']}/file"),
        "run output": api.get(f"{API}/runs/{workspace['first']}/output"),
    }
    expected = {"health": 200, "openapi": 200, "me": 200, "models": 200, "401": 401,
                "404": 404, "422": 422, "NUL": 400, "model file": 200, "run output": 200}
    for name, response in responses.items():
        assert response.status_code == expected[name], (name, response.text[:300])
        assert_not_a_page(response, name)
    with api.stream("GET", f"{API}/runs/{workspace['first']}/events") as events:
        assert events.headers["content-type"].startswith("text/event-stream")
        assert_not_a_page(events, "event stream")
        assert any(line.startswith("event: end") for line in events.iter_lines())

    # static files: right types (nosniff makes browsers hold them to it), nothing from a CDN
    for path, kind in (("/static/web/app.js", "text/javascript"),
                       ("/static/web/style.css", "text/css"),
                       ("/static/web/favicon.svg", "image/svg+xml"),
                       ("/static/vendor/plotly.min.js", "text/javascript"),
                       ("/static/docs/swagger-ui-bundle.js", "text/javascript"),
                       ("/static/docs/swagger-ui.css", "text/css"),
                       ("/static/docs/swagger-init.js", "text/javascript"),
                       ("/static/docs/redoc.standalone.js", "text/javascript"),
                       ("/static/docs/redoc-init.js", "text/javascript")):
        response = anonymous.get(path)
        assert response.status_code == 200, path
        assert response.headers["content-type"].startswith(kind), (path, response.headers)
        assert_not_a_page(response, path)
        assert "cdn.redoc.ly" not in response.text, path
    assert anonymous.get("/static/docs/../../etc/passwd").status_code == 404
    assert anonymous.get("/static/docs/core.py").status_code == 404


def _app(body_chunks: list[bytes]) -> Starlette:
    async def stream(_request: object) -> StreamingResponse:
        async def chunks():  # type: ignore[no-untyped-def]
            for chunk in body_chunks:
                yield chunk
        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def own_policy(_request: object) -> PlainTextResponse:
        return PlainTextResponse("<p>", media_type="text/html",
                                 headers={"Content-Security-Policy": "default-src 'none'"})

    app = Starlette(routes=[Route("/stream", stream), Route("/own", own_policy)])
    app.add_middleware(SecurityHeaders)
    return app


def test_hsts_over_https_only_and_a_page_may_set_its_own_policy() -> None:
    chunks = [b"event: a\ndata: 1\n\n", b"event: b\ndata: 2\n\n", b"event: end\ndata: {}\n\n"]
    app = _app(chunks)
    with TestClient(app, base_url="https://studio.example") as https:
        response = https.get("/stream")
        assert response.headers["strict-transport-security"] == "max-age=31536000"
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.content == b"".join(chunks)  # streamed through untouched
        own = https.get("/own")
        assert own.headers.get_list("content-security-policy") == ["default-src 'none'"]
        assert own.headers["x-frame-options"] == "DENY"
    with TestClient(app, base_url="http://studio.example") as plain:
        assert "strict-transport-security" not in plain.get("/stream").headers


def test_hsts_behind_a_trusted_proxy_only(make_server: Callable[..., Server]) -> None:
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"}
    untrusted = make_server()
    response = httpx.get(f"{untrusted.url}/login", headers=forwarded)
    assert "strict-transport-security" not in response.headers  # anyone can send the header
    behind = make_server(TINYMLAAS_TRUSTED_PROXIES="127.0.0.1")
    for path in ("/login", f"{API}/health"):
        response = httpx.get(f"{behind.url}{path}", headers=forwarded)
        assert response.headers.get("strict-transport-security") == "max-age=31536000", path
    assert "strict-transport-security" not in httpx.get(f"{behind.url}/login").headers
