"""The fleet pages in a real browser: enroll a device through the form (its code shown
once), deploy a run, a device speaking DDI over real HTTP installs it, the pages show its
version, history and on-device inference (also on the run page); pause, resume and roll
back buttons; revoke; a second user reaches none of it. Then the forms' 4xx without a
browser."""

from __future__ import annotations

import base64
import io
import re
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi.testclient import TestClient
from web_support import PASSWORD, csrf_of, log_in, no_horizontal_overflow, shot, sign_in, text_of

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.domain import Pipeline, RunStatus

PACKAGE = {"steps": ["package-python"], "evaluate": False}


class Device:
    """A device speaking DDI to the served app over real HTTP."""

    def __init__(self, url: str, code: str) -> None:
        self.http = httpx.Client(base_url=url, timeout=30)
        answer = self.http.post("/ddi/enroll", json={"code": code})
        assert answer.status_code == 201, answer.text
        self.identity = answer.json()
        self.headers = {"Authorization": f"TargetToken {self.identity['token']}"}
        self.base = (f"/ddi/{self.identity['tenant']}/controller/v1/"
                     f"{self.identity['controller_id']}")

    def links(self) -> dict[str, Any]:
        answer = self.http.get(self.base, headers=self.headers)
        assert answer.status_code == 200, answer.text
        return answer.json()["_links"]

    def action(self) -> str | None:
        link = self.links().get("deploymentBase")
        return link["href"].rsplit("/", 1)[1] if link else None

    def commit(self, action: str) -> None:
        body = {"status": {"execution": "closed", "result": {"finished": "success"},
                           "details": ["installed and checked"],
                           "tinymlaas": {"stage": "committed"}}}
        answer = self.http.post(f"{self.base}/deploymentBase/{action}/feedback",
                                headers=self.headers, json=body)
        assert answer.status_code == 200, answer.text

    def answer_inference(self) -> None:
        """Run the queued job the way a broken model would: class 0 for every sample."""
        work = self.http.get(self.links()["inference"]["href"], headers=self.headers)
        assert work.status_code == 200, work.text
        samples = work.json()["samples"]
        logits = np.zeros((samples, 10), np.float32)
        logits[:, 0] = 1
        buffer = io.BytesIO()
        np.savez(buffer, **{"output/0": logits})
        done = self.http.post(f"{self.links()['inference']['href']}/result",
                              headers=self.headers, json={
                                  "latency_ms": [float(i + 1) for i in range(samples)],
                                  "outputs": base64.b64encode(buffer.getvalue()).decode()})
        assert done.status_code == 200, done.text


def _package_run(site: Any, email: str, tmp: Path) -> tuple[str, str]:
    """A user with the digits dataset and a finished package-python run: (run id, dataset
    id)."""
    user = site.studio.accounts.register(email, PASSWORD, email.split("@")[0])
    assert user is not None
    ws = site.studio.accounts.workspace(user)
    model = ws.add_model(write_digits_onnx(tmp / "digits.onnx"), "digits")
    dataset = ws.add_dataset("digits")
    run = ws.create_run(Pipeline(name="wheel", **PACKAGE), model=model.id,
                        dataset=dataset.id)
    site.studio.runs.submit_run(run)
    deadline = time.monotonic() + 300
    while site.studio.services.get_run(run.id).status not in {RunStatus.succeeded,
                                                               RunStatus.failed}:
        assert time.monotonic() < deadline, "the package run did not finish"
        time.sleep(0.3)
    assert site.studio.services.get_run(run.id).status is RunStatus.succeeded
    return run.id, dataset.id


def _row_state(page: Any, rollout: str) -> str:
    return page.locator(f"#rollout-{rollout}").get_attribute("data-state")


def _press(page: Any, verb: str, rollout: str) -> None:
    page.get_by_role("button", name=f"{verb} rollout {rollout}").click()
    page.wait_for_url(re.compile(r"/fleet\?done="))


def test_enroll_deploy_and_follow_a_device(site, new_page, tmp_path: Path) -> None:
    run_id, dataset_id = _package_run(site, "fleet-owner@example.com", tmp_path)
    page = new_page()
    log_in(page, "fleet-owner@example.com")
    page.get_by_role("navigation", name="Main").get_by_role("link", name="Fleet").click()
    page.wait_for_url(re.compile(r"/fleet$"))
    assert page.get_by_role("heading", name="Devices", exact=True).is_visible()

    # enroll: the code and the agent's command line, shown once
    form = page.get_by_role("form", name="Enroll a device")
    form.get_by_label("Name").fill("pi-1")
    form.get_by_label("Group").fill("lab")
    form.get_by_role("button", name="Add device").click()
    code = page.locator("#enrollment-code").inner_text().strip()
    assert code.startswith("tmle_")
    command = page.locator("#agent-command").inner_text()
    assert command == (f"tinymlaas agent --server {site.url} --token {code} "
                       "--root /var/lib/tinymlaas-agent")
    shot(page, "fleet-enrolled")
    page.goto("/fleet")
    assert code not in page.content(), "the code is shown once only"
    row = page.locator("tr[data-device=pi-1]")
    assert "lab" in row.inner_text() and "not enrolled" in row.inner_text()
    device = Device(site.url, code)
    assert device.action() is None
    page.reload()
    assert row.locator(".health").inner_text().strip() == "unknown"

    # deploy the run to the group; the device is offered the release
    deploy = page.get_by_role("form", name="Deploy")
    deploy.get_by_label("Run").select_option(run_id)
    deploy.get_by_label("Group").fill("lab")
    deploy.get_by_label("Waves (%)").fill("100")
    deploy.get_by_role("button", name="Deploy").click()
    page.wait_for_url(re.compile(r"/fleet\?deployed=rol-"))
    first = page.url.split("deployed=", 1)[1].split("#", 1)[0]
    assert first in page.get_by_role("status").filter(has_text="started").inner_text()
    assert _row_state(page, first) == "running"
    assert "offered 1" in page.locator(f"#rollout-{first} .counts").inner_text()

    # pause and resume: the buttons follow the state
    _press(page, "Pause", first)
    assert _row_state(page, first) == "paused"
    assert device.action() is None, "a paused rollout offers nothing new"
    assert page.get_by_role("button", name=f"Pause rollout {first}").count() == 0
    _press(page, "Resume", first)
    assert _row_state(page, first) == "running"

    # the device installs and commits: the pages show its version and history
    action = device.action()
    assert action is not None
    device.commit(action)
    page.goto("/fleet")
    assert _row_state(page, first) == "finished"
    assert row.locator(".version").inner_text().strip() == "v1"
    assert row.locator(".health").inner_text().strip() == "ok"
    row.get_by_role("link", name="pi-1").click()
    page.wait_for_url(re.compile(r"/fleet/devices/fdev-"))
    device_url = page.url
    assert page.locator("#device-version").inner_text().startswith("v1")
    history = page.locator("#device-history")
    assert history.locator("tr[data-stage=committed]").count() == 1
    assert "installed and checked" in history.inner_text()
    assert history.locator("tr[data-stage=enrolled]").count() == 1

    # inference on the device: queued from its page, answered by the device, scored
    form = page.get_by_role("form", name="Run inference on this device")
    form.get_by_label("Dataset").select_option(dataset_id)
    form.get_by_label("Samples").fill("8")
    form.get_by_role("button", name="Run inference").click()
    page.wait_for_url(re.compile(r"\?queued=inf-"))
    job = page.url.split("queued=", 1)[1].split("#", 1)[0]
    assert page.locator(f"#job-{job}").get_attribute("data-state") == "queued"
    device.answer_inference()
    page.reload()
    job_row = page.locator(f"#job-{job}")
    assert job_row.get_attribute("data-state") == "done"
    assert job_row.locator(".p50").inner_text() == "4.500 ms"  # median of 1..8
    accuracy = float(job_row.locator(".accuracy").inner_text().rstrip("%"))
    assert 0 <= accuracy < 40, "class 0 for everything scores about one in ten"
    shot(page, "fleet-device")

    # the run page: measured on the device, beside the host
    page.goto(f"/runs/{run_id}")
    measured = page.locator("#device-measurements")
    assert measured.locator(f"tr[data-job={job}]").count() == 1
    assert "pi-1" in measured.inner_text() and "4.500 ms" in measured.inner_text()
    assert measured.locator("tr.host").count() == 1
    shot(page, "fleet-run")

    # a second release, then one click rolls the group back to the first (as v3)
    page.goto("/fleet")
    deploy = page.get_by_role("form", name="Deploy")
    deploy.get_by_label("Run").select_option(run_id)
    deploy.get_by_label("Group").fill("lab")
    deploy.get_by_role("button", name="Deploy").click()
    page.wait_for_url(re.compile(r"/fleet\?deployed=rol-"))
    second = page.url.split("deployed=", 1)[1].split("#", 1)[0]
    assert page.locator(f"#rollout-{second} td").nth(1).inner_text() == "v2"
    _press(page, "Roll back", second)
    assert _row_state(page, second) == "cancelled"
    newest = page.locator("#rollouts tbody tr").first
    assert newest.get_attribute("data-rollout") not in (first, second)
    assert newest.locator("td").nth(1).inner_text() == "v3"
    assert newest.get_attribute("data-state") == "running"
    assert device.action() == site.studio.fleet.store.get_rollout(
        newest.get_attribute("data-rollout")).actions[0].id
    shot(page, "fleet")

    # a second user: 404 for the device and the rollout, and the buttons do nothing
    other = new_page()
    assert site.studio.accounts.register("fleet-other@example.com", PASSWORD, "Other")
    log_in(other, "fleet-other@example.com")
    other.goto("/fleet")
    assert "pi-1" not in other.content() and first not in other.content()
    assert other.goto(device_url).status == 404
    assert other.get_by_role("heading", name="Not found").is_visible()
    token = other.locator("input[name=csrf_token]").first.get_attribute("value")
    for path in (f"/fleet/rollouts/{newest.get_attribute('data-rollout')}/pause",
                 f"{device_url.removeprefix(site.url)}/revoke",
                 f"{device_url.removeprefix(site.url)}/inference"):
        answer = other.request.post(path, form={"csrf_token": token, "dataset": dataset_id})
        assert answer.status == 404, (path, answer.status)
    assert device.action() is not None, "the rollout still runs"

    # at phone width the fleet and device pages do not scroll sideways
    phone = new_page(width=390, height=844)
    log_in(phone, "fleet-owner@example.com")
    for path in ("/fleet", device_url):
        phone.goto(path)
        scroll, width = no_horizontal_overflow(phone)
        assert scroll <= width, (path, scroll, width)
    shot(phone, "fleet-phone")

    # revoke: the device's credential stops working
    page.goto(device_url)
    page.get_by_role("button", name="Revoke").click()
    page.wait_for_url(device_url)
    assert page.locator("#device-health").inner_text().strip() == "revoked"
    assert device.http.get(device.base, headers=device.headers).status_code == 401
    assert page.get_by_role("form", name="Run inference on this device").count() == 0

    # a new enrollment code, shown once, brings the device back with a new credential
    page.get_by_role("button", name="New enrollment code").click()
    renewed = page.locator("#enrollment-code").inner_text().strip()
    assert renewed.startswith("tmle_") and renewed != code
    assert renewed in page.locator("#agent-command").inner_text()
    page.goto(device_url)
    assert renewed not in page.content()
    assert page.locator("#device-health").inner_text().strip() != "revoked"
    back = Device(site.url, renewed)
    assert back.identity["controller_id"] == device.identity["controller_id"]
    assert back.http.get(back.base, headers=back.headers).status_code == 200
    assert device.http.get(device.base, headers=device.headers).status_code == 401


def test_fleet_forms_answer_bad_input_with_a_clear_4xx(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "forms@example.com")
    token = csrf_of(http, "/fleet")

    def post(path: str, **form: str) -> Any:
        return http.post(path, data={"csrf_token": token, **form}, follow_redirects=False)

    assert http.post("/fleet/devices", data={"name": "x"}).status_code == 403, "no CSRF"
    added = post("/fleet/devices", name="edge-1", group="lab")
    assert added.status_code == 201 and "tmle_" in added.text
    for form, status, words in (
            ({"name": "../etc"}, 400, "must match"),
            ({"name": ""}, 400, "give the device a name"),
            ({"name": "edge-1"}, 409, "already has a device named"),
            ({"name": "edge-2", "group": "a b"}, 400, "group"),
            ({"name": "edge-3", "profile": "no-such-board"}, 404, "no-such-board"),
            ({"name": "x" * 300}, 400, "invalid request")):
        answer = post("/fleet/devices", **form)
        assert answer.status_code == status, (form, answer.status_code)
        assert words in text_of(answer.text), (form, text_of(answer.text)[:400])
        assert "tmle_" not in answer.text

    model = api.upload_model(write_digits_onnx(tmp_path / "m.onnx"), name="m")
    run = api.follow(api.create_run(model.id, pipeline=PACKAGE).id)
    assert run.status == "succeeded", run.error
    for form, status, words in (
            ({"group": "lab"}, 400, "pick the run"),
            ({"run": run.id}, 400, "give the group"),
            ({"run": run.id, "group": "lab", "waves": "100,50"}, 400, "rising percentages"),
            ({"run": run.id, "group": "lab", "waves": "ten"}, 400, "percentages separated"),
            ({"run": run.id, "group": "lab", "max_latency_ms": "fast"}, 400, "a number"),
            ({"run": run.id, "group": "lab", "error_threshold": "150"}, 400, "from 0 to 100"),
            ({"run": run.id, "group": "lab", "max_latency_ms": "0"}, 400, "above 0"),
            ({"run": run.id, "group": "nobody"}, 400, "has no devices"),
            ({"run": "run-nope", "group": "lab"}, 404, "not found")):
        answer = post("/fleet/rollouts", **form)
        assert answer.status_code == status, (form, answer.status_code)
        assert words in text_of(answer.text), (form, text_of(answer.text)[:400])
    assert api.list_rollouts() == [], "nothing was deployed"

    device = api.list_fleet()[0]
    no_release = post(f"/fleet/devices/{device.id}/inference", dataset="")
    assert no_release.status_code == 400 and "pick the dataset" in text_of(no_release.text)
    data = api.add_builtin_dataset("digits")
    early = post(f"/fleet/devices/{device.id}/inference", dataset=data.id, limit="8")
    assert early.status_code == 409 and "no release installed" in text_of(early.text)
    many = post(f"/fleet/devices/{device.id}/inference", dataset=data.id, limit="lots")
    assert many.status_code == 400 and "whole number" in text_of(many.text)
    assert post("/fleet/rollouts/rol-nope/pause").status_code == 404
    assert post("/fleet/devices/fdev-nope/revoke").status_code == 404

    made = post("/fleet/rollouts", run=run.id, group=" lab ", waves="50, 100",
                error_threshold="0", max_latency_ms="250")
    assert made.status_code == 303 and made.headers["location"].startswith("/fleet?deployed=")
    [rollout] = api.list_rollouts()
    assert rollout.waves == [50, 100] and rollout.error_threshold == 0
    release = next(r for r in api.list_releases() if r.id == rollout.release_id)
    assert release.manifest["signed"]["health"]["max_latency_ms"] == 250
    # a viewer of the project sees the rollout without its buttons, and cannot press them
    with TestClient(http.app, raise_server_exceptions=False) as watcher:
        sign_in(watcher, "viewer@example.com")
        api.share_project(device.project, "viewer@example.com", role="viewer")
        seen = watcher.get("/fleet")
        assert seen.status_code == 200 and f'id="rollout-{rollout.id}"' in seen.text
        assert f"/fleet/rollouts/{rollout.id}/pause" not in seen.text
        pressed = watcher.post(f"/fleet/rollouts/{rollout.id}/pause", data={
            "csrf_token": csrf_of(watcher, "/fleet")}, follow_redirects=False)
        assert pressed.status_code == 403 and "editor role" in text_of(pressed.text)
        assert api.rollout(rollout.id).state.value == "running"
    for path in ("/fleet/devices", "/fleet/rollouts", f"/fleet/rollouts/{rollout.id}/cancel",
                 f"/fleet/rollouts/{rollout.id}/rollback", f"/fleet/devices/{device.id}/revoke",
                 f"/fleet/devices/{device.id}/inference",
                 f"/fleet/devices/{device.id}/enrollment-code"):
        forged = http.post(path, data={"csrf_token": "forged", "name": "z", "run": run.id,
                                       "group": "lab", "dataset": data.id})
        assert forged.status_code == 403, (path, forged.status_code)
    assert api.rollout(rollout.id).state.value == "running"
    assert api.fleet_device(device.id).revoked_at is None
    assert post(f"/fleet/rollouts/{rollout.id}/explode").status_code == 404
    again = post(f"/fleet/rollouts/{rollout.id}/resume")
    assert again.status_code == 409 and "only a paused rollout" in text_of(again.text)
    nothing = post(f"/fleet/rollouts/{rollout.id}/rollback")
    assert nothing.status_code == 409 and "nothing to roll back" in text_of(nothing.text)
    assert post(f"/fleet/rollouts/{rollout.id}/cancel").status_code == 303
    assert api.rollout(rollout.id).state.value == "cancelled"
