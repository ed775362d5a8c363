"""The run page of an installer run lists each package: its size, its manifest, and a
download that gives the stored bytes."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from fastapi.testclient import TestClient
from web_support import sign_in, text_of

from tinymlaas.api.testing import write_digits_onnx
from tinymlaas.web.render import fmt_bytes


def api_manifest(http: TestClient, api, run_id: str) -> dict:
    """The bundle's manifest.json, read from the downloaded zip."""
    import io
    import json
    import zipfile

    data = http.get(f"/api/v1/runs/{run_id}/output",
                    headers={"Authorization": f"Bearer {api.token}"}).content
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return json.loads(archive.read("manifest.json"))


def test_run_page_lists_installer_outputs(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "ada@example.com")
    model = api.upload_model(write_digits_onnx(tmp_path / "m.onnx"), name="m")
    pipeline = {"steps": [{"package-c": {"measure_elf": False}}, "package-python"],
                "evaluate": False}
    # package-python takes ONNX, not a bundle: the chain is refused before anything runs
    refused = http.post("/api/v1/runs", headers={"Authorization": f"Bearer {api.token}"},
                        json={"model": model.id, "pipeline": pipeline})
    assert refused.status_code == 422 and "package-python" in refused.json()["message"]

    run = api.follow(api.create_run(model.id, pipeline={
        "steps": [{"package-c": {"measure_elf": False}}], "evaluate": False}).id)
    assert run.status == "succeeded", run.error
    page = http.get(f"/runs/{run.id}")
    assert page.status_code == 200
    section = page.text.split('id="installers"', 1)[1].split("</section>", 1)[0]
    artifact = next(a for a in api.run_artifacts(run.id) if a.kind == "c-bundle")
    assert "package-c" in section and fmt_bytes(artifact.size_bytes) in text_of(section)
    manifest = api_manifest(http, api, run.id)
    assert manifest["files"]["src/model.c"] in section  # the manifest, shown in full
    link = re.search(r'href="(/runs/[^"]+/artifacts/[0-9a-f]{64})" download="([^"]+)"',
                     section)
    assert link and link.group(2) == "c-bundle.zip"
    download = http.get(link.group(1))
    assert download.status_code == 200
    assert hashlib.sha256(download.content).hexdigest() == artifact.sha256
