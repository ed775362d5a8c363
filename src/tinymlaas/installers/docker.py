"""Write the Docker build context of ``package-docker``.

The context serves one model over HTTP with the standard library's ``http.server``, numpy
and ONNX Runtime::

    Dockerfile  .dockerignore  README.md  metadata.json  requirements.txt  server.py
    model/model.onnx            (from an ONNX model)
    wheels/<dist>-<ver>-py3-none-any.whl   (from a package-python wheel, installed in the image)

Everything is written from templates under ``files/docker/``; the requirements pin the
onnxruntime and numpy versions the model was checked with here.
"""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tinymlaas.domain import ArtifactKind, Device
from tinymlaas.errors import InvalidInputError
from tinymlaas.installers.wheel import (
    WheelInfo,
    describe_model,
    read_wheel,
    render_template,
    runtime_pins,
)

__all__ = ["BuiltContext", "build_context", "check_base_image", "example_request"]

_IMAGE = re.compile(r"(?:[a-z0-9.-]+(?::[0-9]{1,5})?/)?[a-z0-9]+(?:[._-][a-z0-9]+)*"
                    r"(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*"
                    r"(?P<tag>:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?P<digest>@sha256:[0-9a-f]{64})?")


def check_base_image(image: str) -> str:
    """``image`` if it is a Docker image reference pinned by a version tag or a digest.

    Raises:
        ValueError: Not an image reference, or not pinned (no tag, or ``latest``).
    """
    match = _IMAGE.fullmatch(image)
    if match is None:
        raise ValueError("must be an image reference such as 'python:3.11.11-slim-bookworm' "
                         "or 'python@sha256:<64 hex digits>'")
    if not match.group("digest") and match.group("tag") in (None, ":latest"):
        raise ValueError("pin the base image by a version tag (not 'latest') or a digest, "
                         "e.g. 'python:3.11.11-slim-bookworm'")
    return image


@dataclass(frozen=True)
class BuiltContext:
    """A written build context: its directory, files (relative, sorted) and metadata."""

    path: Path
    files: list[str]
    total_bytes: int
    metadata: dict[str, Any]
    wheel: str | None


def example_request(inputs: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid ``/predict`` body of zeros, free dimensions taken as 1."""
    def zeros(spec: dict[str, Any]) -> Any:
        value: Any = False if spec["dtype"] == "bool" else 0
        for dim in reversed(spec["shape"]):
            value = [value] * (dim if isinstance(dim, int) else 1)
        return value

    if len(inputs) == 1:
        return {"inputs": zeros(inputs[0])}
    return {spec["name"]: zeros(spec) for spec in inputs}


def _example_text(inputs: list[dict[str, Any]]) -> str:
    text = json.dumps(example_request(inputs), separators=(",", ":"))
    if len(text) > 400:  # big inputs: show the shape of the request, not every zero
        names = [spec["name"] for spec in inputs]
        text = '{"inputs": [...]}' if len(names) == 1 else \
            json.dumps({n: "[...]" for n in names}).replace('"[...]"', "[...]")
    return text


def _model_files(model_path: Path, kind: ArtifactKind, out: Path,
                 device: Device | None) -> tuple[dict[str, Any], WheelInfo | None]:
    if kind == ArtifactKind.python_wheel:
        wheel = read_wheel(model_path)
        (out / "wheels").mkdir()
        shutil.copyfile(model_path, out / "wheels" / wheel.file_name)
        return {**wheel.metadata, "wheel": f"wheels/{wheel.file_name}"}, wheel
    if kind != ArtifactKind.onnx:
        raise InvalidInputError(f"package-docker takes an onnx model or a python-wheel, not "
                                f"{kind.value}")
    metadata = describe_model(model_path, device)
    (out / "model").mkdir()
    shutil.copyfile(model_path, out / "model" / "model.onnx")
    return metadata, None


def _file_table(files: list[str], wheel: WheelInfo | None) -> str:
    roles = {"Dockerfile": "the image recipe", ".dockerignore": "keeps the rest out of the build",
             "README.md": "this file", "metadata.json": "the model's description "
             "(served at /metadata)", "requirements.txt": "pinned Python dependencies",
             "server.py": "the HTTP server (standard library, numpy, onnxruntime)",
             "model/model.onnx": "the model"}
    if wheel is not None:
        roles[f"wheels/{wheel.file_name}"] = "the model's package, installed in the image"
    return "\n".join(f"| `{name}` | {roles.get(name, '')} |" for name in files)


def build_context(model_path: Path, kind: ArtifactKind, out: Path, *,
                  base_image: str = "python:3.11.11-slim-bookworm", port: int = 8080,
                  max_request_bytes: int = 16 * 1024**2,
                  device: Device | None = None) -> BuiltContext:
    """Write the build context for ``model_path`` (an ONNX file or a package-python wheel).

    Args:
        model_path: The model or wheel.
        kind: ``onnx`` or ``python-wheel``.
        out: The context directory to create (it must not exist yet, or be empty).
        base_image: Pinned base image (see :func:`check_base_image`).
        port: Default port of the server.
        max_request_bytes: Largest request body the server reads.
        device: The run's target device, recorded in ``metadata.json`` (ONNX input).

    Raises:
        InvalidInputError: A bad base image, input kind or wheel.
        UnsupportedModelError: A model the server cannot serve.
    """
    try:
        check_base_image(base_image)
    except ValueError as exc:
        raise InvalidInputError(f"base image {base_image!r}: {exc}") from None
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise InvalidInputError(f"{out} is not empty; give a new directory")
    metadata, wheel = _model_files(model_path, kind, out, device)
    name = wheel.name if wheel else "model"
    version = wheel.version if wheel else "1"
    sha256 = metadata["model"]["sha256"]
    pins = runtime_pins()
    requirements = [f"{dist}=={pins[dist]}" for dist in sorted(pins)]
    if wheel is not None:
        requirements.append(f"./wheels/{wheel.file_name}")
    values = {"name": name, "version": version, "sha256": sha256, "port": str(port),
              "max_bytes": str(max_request_bytes), "base_image": base_image}
    texts = {
        "Dockerfile": render_template(
            "docker", "Dockerfile", **values,
            copy_requirements="COPY requirements.txt ./" if wheel is None else
            "COPY requirements.txt ./\nCOPY wheels/ ./wheels/",
            copy_model="COPY model/ ./model/" if wheel is None else
            "# The model is inside the package installed above."),
        ".dockerignore": render_template(
            "docker", "dockerignore",
            allow="!model/model.onnx" if wheel is None else f"!wheels/{wheel.file_name}"),
        "metadata.json": json.dumps(metadata, indent=2, sort_keys=True) + "\n",
        "requirements.txt": "\n".join(requirements) + "\n",
        "server.py": render_template("docker", "server.py", port=str(port),
                                     max_bytes=str(max_request_bytes),
                                     package=wheel.package if wheel else ""),
    }
    for file, text in texts.items():
        (out / file).write_text(text, "utf-8")
    files = sorted([*texts, "README.md",
                    f"wheels/{wheel.file_name}" if wheel else "model/model.onnx"])
    inputs = "\n".join(f"- `{s['name']}`: {s['dtype']}, shape {s['shape']}"
                       for s in metadata["inputs"])
    (out / "README.md").write_text(render_template(
        "docker", "README.md", **values, onnxruntime=pins["onnxruntime"],
        files=_file_table(files, wheel), example=_example_text(metadata["inputs"]),
        inputs=inputs), "utf-8")
    total = sum((out / f).stat().st_size for f in files)
    return BuiltContext(out, files, total, metadata, wheel.file_name if wheel else None)
