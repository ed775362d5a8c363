"""Pages in a real browser: isolation between users, inline errors, keyboard use, CSRF,
and a phone-width layout."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
from web_support import PASSWORD, log_in, no_horizontal_overflow, shot, user_with_runs

GRACE = "grace@example.com"


@pytest.fixture(scope="module")
def grace(site: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A user with a small ONNX model, the digits dataset and two finished runs."""
    return user_with_runs(site, GRACE, "Grace", tmp_path_factory.mktemp("grace"))


def test_login_by_keyboard_and_wrong_password(new_page: Any, grace: dict[str, Any],
                                              screenshots: Path) -> None:
    page = new_page()
    page.goto("/projects")
    assert "/login?next=/projects" in page.url
    page.get_by_label("Email").fill(GRACE)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    assert page.locator("#form-error").inner_text() == "wrong email or password"
    assert page.get_by_label("Email").input_value() == GRACE
    shot(page, "10-login-error")
    log_in(page, GRACE)
    # Without a page to return to, log-in lands on the user's own project.
    page.wait_for_url(re.compile(r"/projects/proj-[0-9a-f]+$"))
    assert page.get_by_role("heading", name="Grace's project").is_visible()
    shot(page, "11-own-project")
    page.get_by_role("button", name="Log out").click()
    page.wait_for_url(re.compile(r"/login$"))
    page.goto(f"/projects/{grace['project']}")
    assert "/login" in page.url


def test_another_user_gets_not_found(signed_in: Any, grace: dict[str, Any],
                                     screenshots: Path) -> None:
    page = signed_in("mallory@example.com")
    run = grace["runs"][0]
    for path in (f"/projects/{grace['project']}", f"/projects/{grace['project']}/runs/new",
                 f"/projects/{grace['project']}/compare?run={run}&run={grace['runs'][1]}",
                 f"/runs/{run}", f"/runs/{run}/body"):
        response = page.goto(path)
        assert response.status == 404, path
        assert page.locator("h1").inner_text() == "Not found"
    shot(page, "12-not-found")
    for path in (f"/runs/{run}/output", f"/runs/{run}/export", f"/runs/{run}/events",
                 f"/models/{grace['model']}/file"):
        assert page.request.get(path).status == 404, path
    page.goto("/projects")
    assert "Grace" not in page.locator("main").inner_text()
    page.goto("/models")
    assert page.get_by_text("No models yet").is_visible()


def test_run_form_errors_inline(new_page: Any, grace: dict[str, Any],
                                screenshots: Path) -> None:
    page = new_page()
    log_in(page, GRACE)
    page.goto(f"/projects/{grace['project']}/runs/new")
    page.get_by_role("button", name="Start run").click()
    assert "pick the model" in page.locator("#model-error").inner_text()
    assert page.locator(".field.invalid #model").count() == 1

    page.get_by_label("Model", exact=True).select_option(grace["model"])
    dataset = page.get_by_label("Dataset", exact=True)
    dataset.select_option(dataset.locator("option", has_text="digits").get_attribute("value"))
    page.get_by_label("Build the steps").check()
    page.get_by_label("Add a step").select_option("fuse")
    page.get_by_role("button", name="Add step").click()
    page.get_by_label("Add a step").select_option("quantize-static")
    page.get_by_role("button", name="Add step").click()
    second = page.locator(".step-card").nth(1)
    second.get_by_label("Num Samples").fill("0")
    page.get_by_role("button", name="Start run").click()

    # the engine's message, next to the form, the step and the field it names
    assert "step 2 quantize-static" in page.locator("#form-error").inner_text()
    second = page.locator(".step-card").nth(1)
    assert "has-error" in second.get_attribute("class")
    field_error = second.locator("[data-error-for=num_samples]")
    assert field_error.is_visible() and "greater than 0" in field_error.inner_text()
    assert second.get_by_label("Num Samples").input_value() == "0"  # the builder kept it
    shot(page, "13-new-run-step-error")

    # a chain the engine rejects: export-onnx needs a PyTorch model, this one is ONNX
    page.locator(".step-card").nth(1).get_by_role("button", name="Remove step").click()
    page.locator(".step-card").nth(0).get_by_role("button", name="Remove step").click()
    page.get_by_label("Add a step").select_option("export-onnx")
    page.get_by_role("button", name="Add step").click()
    page.get_by_role("button", name="Start run").click()
    assert "takes torch-exported" in page.locator("#form-error").inner_text()
    assert "takes torch-exported" in page.locator(".step-card .step-error").inner_text()

    # the builder's way to a valid run
    page.locator(".step-card").nth(0).get_by_role("button", name="Remove step").click()
    page.get_by_label("Add a step").select_option("fp16")
    page.get_by_role("button", name="Add step").click()
    page.get_by_role("button", name="Start run").click()
    page.wait_for_url(re.compile(r"/runs/run-[0-9a-f]+$"))
    page.wait_for_selector("#run-status[data-status=succeeded]", timeout=300_000)


def test_register_and_device_errors_inline(new_page: Any, grace: dict[str, Any],
                                           screenshots: Path) -> None:
    page = new_page()
    page.goto("/register")
    page.get_by_label("Email").fill("someone@example.com")
    page.get_by_label("Password").fill("short")
    page.get_by_role("button", name="Register").click()
    assert "at least 8 characters" in page.locator("#password-error").inner_text()
    shot(page, "14-register-error")

    log_in(page, GRACE)
    page.goto("/devices")
    page.get_by_label("Name").fill("bad name!")
    page.get_by_role("button", name="Register device").click()
    for name in ("name", "arch", "clock_mhz", "ram_kb", "flash_kb"):
        assert page.locator(f"#{name}-error").is_visible(), name
    assert page.get_by_label("Name").input_value() == "bad name!"
    shot(page, "15-device-errors")
    for label, value in (("Name", "my-board"), ("Architecture", "cortex-m4"),
                         ("Clock (MHz)", "80"), ("RAM (KiB)", "96"), ("Flash (KiB)", "512")):
        page.get_by_label(label, exact=True).fill(value)
    page.get_by_role("button", name="Register device").click()
    assert page.locator("#device-my-board.added").is_visible()


def test_forms_need_the_csrf_token(new_page: Any, grace: dict[str, Any]) -> None:
    page = new_page()
    page.goto("/login")  # sets the signed-out CSRF cookie
    forged = page.request.post("/login", form={"email": GRACE, "password": PASSWORD},
                               max_redirects=0)
    assert forged.status == 403
    assert not any(c["name"] == "tinymlaas_session" for c in page.context.cookies())
    log_in(page, GRACE)
    for token in (None, "forged"):
        form = {"name": "sneaky"} if token is None else {"name": "sneaky", "csrf_token": token}
        response = page.request.post("/projects", form=form, max_redirects=0)
        assert response.status == 403
    page.goto("/projects")
    assert "sneaky" not in page.locator("main").inner_text()
    cookie = next(c for c in page.context.cookies() if c["name"] == "tinymlaas_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Lax"
    assert page.evaluate("document.cookie").find("tinymlaas_session") == -1


def test_pages_fit_a_phone(new_page: Any, grace: dict[str, Any], screenshots: Path) -> None:
    page = new_page(width=390, height=844, is_mobile=True, has_touch=True)
    page.goto("/login")
    assert no_horizontal_overflow(page)[0] <= 390
    shot(page, "20-phone-login")
    log_in(page, GRACE)
    first, second = grace["runs"]
    pages = {
        "projects": "/projects",
        "dashboard": f"/projects/{grace['project']}",
        "new-run": f"/projects/{grace['project']}/runs/new",
        "run": f"/runs/{first}",
        "compare": f"/projects/{grace['project']}/compare?run={first}&run={second}",
        "models": "/models", "datasets": "/datasets", "devices": "/devices",
        "transformers": "/transformers",
    }
    for name, path in pages.items():
        page.goto(path)
        if name == "compare":
            page.wait_for_selector("body[data-plots-ready='1']", timeout=60_000)
        scroll, width = no_horizontal_overflow(page)
        assert scroll <= width, f"{path} is {scroll}px wide on a {width}px screen"
        shot(page, f"21-phone-{name}")


def test_desktop_catalog_pages(new_page: Any, grace: dict[str, Any], screenshots: Path) -> None:
    page = new_page()
    log_in(page, GRACE)
    page.goto("/transformers")
    assert page.locator("#t-quantize-static").is_visible()
    assert page.locator(".transformer").count() >= 10
    shot(page, "30-transformers")
    page.goto("/devices")
    assert page.locator("#device-stm32f746-discovery").is_visible()
    shot(page, "31-devices")
    page.goto(f"/runs/{grace['runs'][1]}")
    assert page.locator("#fit-verdict").is_visible()
    shot(page, "32-run-with-fit")
    page.goto(f"/projects/{grace['project']}/compare?run={grace['runs'][0]}")
    assert "at least two runs" in page.locator("#form-error").inner_text()
