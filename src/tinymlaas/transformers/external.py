"""``external``: any command or container image that honours the file contract.

The contract, the same for a local command and a container image:

* ``/in`` (``{in}``): a directory holding the input artifact (``model.onnx`` etc.),
* ``/out`` (``{out}``): an empty directory the step fills,
* ``params.json`` (``{params}``): the step's ``config`` object,
* ``/out/metrics.json`` (optional): a JSON object of numbers to record.

For a command, ``{in}``, ``{out}`` and ``{params}`` in its arguments are replaced by the real
paths, which are also in ``TINYMLAAS_IN``, ``TINYMLAAS_OUT`` and ``TINYMLAAS_PARAMS``. For an
image, the directories are mounted at ``/in`` and ``/out`` and params at ``/params.json``.
A directory-shaped output kind takes the whole ``out`` directory; a file kind takes the one
file in it (``metrics.json`` aside).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

from pydantic import Field, model_validator

from tinymlaas.domain import ArtifactKind
from tinymlaas.domain.entities import DIRECTORY_KINDS, MODEL_KINDS
from tinymlaas.errors import InvalidInputError, StepFailedError
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer

_ACCEPTED = frozenset(MODEL_KINDS | DIRECTORY_KINDS | {ArtifactKind.bundle_zip, ArtifactKind.file})


class ExternalParams(Params):
    command: list[str] | None = Field(default=None, description="argv, with {in} {out} {params}.")
    image: str | None = Field(default=None, description="A container image (needs Docker).")
    produces: ArtifactKind = Field(default=ArtifactKind.onnx, description="Output kind.")
    config: dict[str, Any] = Field(default_factory=dict, description="Written to params.json.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment.")

    @model_validator(mode="after")
    def _one_of(self) -> ExternalParams:
        if (self.command is None) == (self.image is None):
            raise ValueError("give exactly one of 'command' or 'image'")
        if self.command is not None and not self.command:
            raise ValueError("'command' must not be empty")
        return self


def docker_argv(image: str, in_dir: str, out_dir: str, params: str) -> list[str]:
    """The ``docker run`` line that maps the file contract onto a container."""
    return ["docker", "run", "--rm", "--network=none", "-v", f"{in_dir}:/in:ro",
            "-v", f"{out_dir}:/out", "-v", f"{params}:/params.json:ro", image]


class External(Transformer):
    name = "external"
    version = "1"
    summary = "Run a command or container image that reads /in and params.json, writes /out."
    Params = ExternalParams
    accepts = _ACCEPTED

    def output_kind(self, input_kind: ArtifactKind, params: Any) -> ArtifactKind:
        return params.produces

    def run(self, ctx: StepContext) -> StepOutput:
        params: ExternalParams = ctx.params
        in_dir, out_dir = ctx.work_dir / "in", ctx.work_dir / "out"
        out_dir.mkdir(parents=True)
        if ctx.input_path.is_dir():
            shutil.copytree(ctx.input_path, in_dir)
        else:
            in_dir.mkdir(parents=True)
            shutil.copyfile(ctx.input_path, in_dir / _input_name(ctx.input_kind))
        params_file = ctx.work_dir / "params.json"
        params_file.write_text(json.dumps(params.config))
        paths = {"in": str(in_dir), "out": str(out_dir), "params": str(params_file)}
        if params.command is not None:
            argv = [arg.format(**paths) if "{" in arg else arg for arg in params.command]
        else:
            argv = docker_argv(params.image or "", **{"in_dir": paths["in"],
                               "out_dir": paths["out"], "params": paths["params"]})
        env = {**os.environ, **params.env, "TINYMLAAS_IN": paths["in"],
               "TINYMLAAS_OUT": paths["out"], "TINYMLAAS_PARAMS": paths["params"]}
        ctx.log.info("running %s", " ".join(argv))
        try:
            proc = subprocess.run(argv, env=env, cwd=ctx.work_dir, capture_output=True,
                                  text=True, check=False)
        except FileNotFoundError as exc:
            raise InvalidInputError(f"external command not found: {argv[0]}") from exc
        if proc.stdout:
            ctx.log.info("%s", proc.stdout[-20000:])
        if proc.stderr:
            ctx.log.info("%s", proc.stderr[-20000:])
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [""]
            raise StepFailedError(f"external command exited with {proc.returncode}: {tail[0]}")
        metrics: dict[str, Any] = {}
        metrics_file = out_dir / "metrics.json"
        if metrics_file.is_file():
            metrics = json.loads(metrics_file.read_text())
            metrics_file.unlink()
            if not isinstance(metrics, dict):
                raise StepFailedError("metrics.json must hold a JSON object")
        if params.produces in DIRECTORY_KINDS:
            return StepOutput(out_dir, params.produces, metrics)
        files = [p for p in out_dir.iterdir() if p.is_file()]
        if len(files) != 1:
            raise StepFailedError(f"the external step must write exactly one file to /out; "
                                  f"found {sorted(p.name for p in files)}")
        return StepOutput(files[0], params.produces, metrics)


def _input_name(kind: ArtifactKind) -> str:
    return {ArtifactKind.onnx: "model.onnx", ArtifactKind.torch_exported: "model.pt2",
            ArtifactKind.torchscript: "model.pt", ArtifactKind.bundle_zip: "bundle.zip"
            }.get(kind, "input")
