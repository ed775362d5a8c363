"""The upload forms take what the CLI takes: a TorchScript model's input shape, a dataset's
task, label column, image size and splits; a bad value is a 4xx that names the field, and
nothing is registered."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from fastapi.testclient import TestClient
from web_support import sign_in, text_of

from helpers import png_bytes, write_zip


def _post(http: TestClient, path: str, file: Path, **fields: str):
    page = http.get(path)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
    assert token, page.text[:1000]
    with file.open("rb") as fh:
        return http.post(path, data={"csrf_token": token.group(1), **fields},
                         files={"file": (file.name, fh)}, follow_redirects=False)


def test_model_form_takes_a_torchscript_input_shape(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "ada@example.com")
    scripted = tmp_path / "scripted.pt"
    module = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    torch.jit.save(torch.jit.script(module), str(scripted))

    missing = _post(http, "/models", scripted)
    assert missing.status_code == 400 and "input shape" in text_of(missing.text)
    for bad in ("1,x,8", "0,8,8", "1,2,3,4,5,6,7,8,9"):
        refused = _post(http, "/models", scripted, input_shape=bad)
        assert refused.status_code == 400, bad
        assert "input shape: expected 1 to 8 whole numbers" in text_of(refused.text)
    assert api.list_models() == []

    done = _post(http, "/models", scripted, input_shape="1, 8, 8", name="ts")
    assert done.status_code == 303, text_of(done.text)[:500]
    model = api.list_models()[0]
    assert model.kind == "torchscript" and model.inputs[0].shape[1:] == [1, 8, 8]


def test_dataset_form_takes_image_size_and_splits(http: TestClient, tmp_path: Path) -> None:
    api = sign_in(http, "ada@example.com")
    images = write_zip(tmp_path / "imgs.zip", {
        f"data/{cls}/{i}.png": png_bytes(v, size=12) for cls, v in (("dark", 10),
                                                                  ("light", 240))
        for i in range(10)})
    for fields, message in (({"image_size": "0x16"}, "image size: expected 2 whole numbers"),
                            ({"image_size": "16"}, "image size: expected 2 whole numbers"),
                            ({"test_fraction": "1.5"}, "splits: test_fraction"),
                            ({"calibration_size": "many"}, "splits: the test fraction")):
        refused = _post(http, "/datasets", images, **fields)
        assert refused.status_code == 400, fields
        assert message in text_of(refused.text), (fields, text_of(refused.text)[:300])
    assert api.list_datasets() == []

    done = _post(http, "/datasets", images, image_size="6x6", test_fraction="0.25",
                 calibration_size="5", seed="3", task="classification", name="imgs")
    assert done.status_code == 303, text_of(done.text)[:500]
    dataset = api.list_datasets()[0]
    assert dataset.feature_shape == [1, 6, 6] and dataset.num_classes == 2
    assert dataset.splits == {"test_fraction": 0.25, "calibration_size": 5, "seed": 3}

    table = tmp_path / "table.csv"
    rows = np.random.default_rng(0).normal(size=(20, 3)).round(3)
    table.write_text("species,a,b,c\n" + "\n".join(
        f"{'cat' if i % 2 else 'dog'},{r[0]},{r[1]},{r[2]}" for i, r in enumerate(rows)))
    done = _post(http, "/datasets", table, label_column="species", name="table")
    assert done.status_code == 303
    csv = next(d for d in api.list_datasets() if d.name == "table")
    assert csv.feature_shape == [3] and csv.num_classes == 2
