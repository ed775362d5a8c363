"""The model upload form takes an ONNX model's external-data files; a missing, unreferenced
or hostile one is refused on the form with a 4xx, and nothing is registered."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from sklearn.datasets import load_digits

from tinymlaas.api.testing import write_digits_onnx


def _upload(page: Any, model: Path, *sidecars: Path, description: str = "") -> int:
    """Fill the model form and submit it; the status of the answer."""
    page.goto("/models")
    page.get_by_label("File (.onnx, .pt2, TorchScript .pt)").set_input_files(str(model))
    page.get_by_label("External data (ONNX, optional)").set_input_files(
        [str(s) for s in sidecars])
    page.get_by_label("Description (optional)").fill(description)
    with page.expect_response(lambda r: r.request.method == "POST"
                              and r.url.endswith("/models")) as answer:
        page.get_by_role("button", name="Upload").click()
    page.wait_for_load_state()
    return answer.value.status


def test_model_form_uploads_external_data(signed_in: Any, site: Any, tmp_path: Path) -> None:
    page = signed_in("ext-data@example.com")
    reference = write_digits_onnx(tmp_path / "ref" / "logreg.onnx")
    folder = tmp_path / "external"
    folder.mkdir()
    model = folder / "digits.onnx"
    onnx.save_model(onnx.load(str(reference)), str(model), save_as_external_data=True,
                    all_tensors_to_one_file=True, location="digits.onnx.data",
                    size_threshold=0)
    sidecar = folder / "digits.onnx.data"
    spare = folder / "spare.bin"
    spare.write_bytes(b"\0" * 16)
    hostile = folder / "hostile.onnx"
    proto = onnx.load(str(model), load_external_data=False)
    for entry in proto.graph.initializer[0].external_data:
        if entry.key == "location":
            entry.value = "../../etc/passwd"
    onnx.save(proto, str(hostile))

    for files, status, words in (
            ((model,), 422, "'digits.onnx.data', which was not uploaded"),
            ((model, sidecar, spare), 422, "'spare.bin' was uploaded but the model does not"),
            ((hostile, sidecar), 400, "'../../etc/passwd' outside the model's folder")):
        assert _upload(page, *files) == status, files
        assert words in page.locator("#form-error").inner_text()
    assert page.get_by_text("No models yet").is_visible()

    assert _upload(page, model, sidecar, description="weights kept outside") == 303
    page.wait_for_url(re.compile(r"/models\?added=model-"))
    row = page.locator("#models-table tbody tr.added")
    assert "digits" in row.inner_text() and "weights kept outside" in row.inner_text()
    with page.expect_download() as download:
        row.get_by_role("link", name="Download").click()
    stored = Path(download.value.path()).read_bytes()
    assert all(t.data_location == onnx.TensorProto.DEFAULT
               for t in onnx.load_from_string(stored).graph.initializer)
    x = (load_digits().images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    logits = ort.InferenceSession(stored, providers=["CPUExecutionProvider"]).run(
        None, {"input": x})[0]
    assert (logits.argmax(1) == load_digits().target).mean() > 0.95

    # A self-contained model with the external-data input left empty.
    assert _upload(page, reference) == 303
    assert page.locator("#models-table tbody tr").count() == 2
    assert not list((site.studio.settings.home / "uploads").glob(".upload-*"))
