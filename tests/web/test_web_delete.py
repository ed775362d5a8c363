"""Deleting from the web pages over plain HTTP: a confirmation page names what goes, the
form needs its CSRF token, a model in use needs the force box, and strangers get a 404."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient
from web_support import sign_in, text_of

from tinymlaas.api.testing import write_digits_onnx

FUSE = {"steps": ["fuse"], "evaluate": False}


def _token(page: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert found, page[:2000]
    return found.group(1)


def test_confirm_then_delete(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "ada@example.com")
    model = api.upload_model(write_digits_onnx(tmp_path / "m.onnx"), name="logreg")
    data = api.add_builtin_dataset("digits")
    run = api.follow(api.create_run(model.id, data.id, pipeline=FUSE, name="fused").id)
    assert run.status == "succeeded", run.error

    confirm = http.get(f"/models/{model.id}/delete")
    assert confirm.status_code == 200
    text = text_of(confirm.text)
    assert "Delete model logreg ?" in text and "1 run(s) use it: fused" in text

    no_token = http.post(f"/models/{model.id}/delete", data={}, follow_redirects=False)
    assert no_token.status_code == 403
    in_use = http.post(f"/models/{model.id}/delete", data={"csrf_token": _token(confirm.text)},
                       follow_redirects=False)
    assert in_use.status_code == 409 and "used by 1 run" in text_of(in_use.text)
    assert api.get_model(model.id).id == model.id

    forced = http.post(f"/models/{model.id}/delete",
                       data={"csrf_token": _token(confirm.text), "force": "on"},
                       follow_redirects=False)
    assert forced.status_code == 303 and forced.headers["location"] == "/models?deleted=model"
    assert api.list_runs() == [] and api.list_models() == []

    # another account: the confirmation page of someone else's dataset does not exist
    stranger = TestClient(http.app, raise_server_exceptions=False)
    sign_in(stranger, "eve@example.com")
    assert stranger.get(f"/datasets/{data.id}/delete").status_code == 404
    page = stranger.get("/projects")
    gone = stranger.post(f"/datasets/{data.id}/delete", data={"csrf_token": _token(page.text)},
                         follow_redirects=False)
    assert gone.status_code == 404
    assert api.get_dataset(data.id).id == data.id
