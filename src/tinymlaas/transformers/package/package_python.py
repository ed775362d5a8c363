"""``package-python``: an ONNX model as an installable Python wheel.

The wheel holds an import package with the model as package data, ``predict`` run by ONNX
Runtime, the model's metadata, and a console script; its METADATA records what is known at
package time (model digest, size, parameters, inputs and outputs, the run's device). The
wheel is built here, by the standard library, deterministically: the same model and
parameters give the same bytes.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from tinymlaas.domain import ArtifactKind
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer

__all__ = ["PackagePython", "PackagePythonParams"]


class PackagePythonParams(Params):
    name: str | None = Field(default=None, max_length=64, description="Distribution name "
                             "(PEP 503), also the console script; the import package is "
                             "the same with underscores. Default: from the model file name.")
    version: str = Field(default="0.1.0", max_length=64, description="Version (PEP 440).")
    description: str = Field(default="", max_length=200, description="One-line summary.")
    verify: bool = Field(default=True, description="Import the built package in a separate "
                         "interpreter and check its predict against ONNX Runtime.")

    @field_validator("name")
    @classmethod
    def _distribution_name(cls, value: str | None) -> str | None:
        from tinymlaas.installers.wheel import check_distribution_name

        return None if value is None else check_distribution_name(value)

    @field_validator("version")
    @classmethod
    def _pep440(cls, value: str) -> str:
        from tinymlaas.installers.wheel import check_version

        return check_version(value)

    @field_validator("description")
    @classmethod
    def _one_line(cls, value: str) -> str:
        from tinymlaas.installers.wheel import check_summary

        return check_summary(value)


class PackagePython(Transformer):
    name = "package-python"
    version = "1"
    summary = "Package as a pip-installable wheel: predict(), metadata and a console script."
    Params = PackagePythonParams
    accepts = frozenset({ArtifactKind.onnx})
    produces = ArtifactKind.python_wheel
    needs = "none"
    uses_device = True

    def run(self, ctx: StepContext) -> StepOutput:
        from tinymlaas.installers.wheel import build_wheel, default_name, verify_wheel

        params: PackagePythonParams = ctx.params
        ctx.progress(0.1, "describing the model")
        built = build_wheel(ctx.input_path, ctx.out_dir,
                            name=params.name or default_name(ctx.input_path),
                            version=params.version, summary=params.description,
                            device=ctx.device)
        metrics: dict[str, object] = {
            "wheel_bytes": built.path.stat().st_size, "wheel_sha256": built.sha256,
            "model_sha256": built.metadata["model"]["sha256"],
            "parameters": built.metadata["model"]["parameters"]}
        ctx.log.info("built %s (%d bytes)", built.path.name, metrics["wheel_bytes"])
        if params.verify:
            ctx.progress(0.6, "importing the wheel and checking predict")
            metrics["verify_max_abs_diff"] = verify_wheel(built.path, ctx.input_path,
                                                          ctx.work_dir / "verify")
        return StepOutput(built.path, self.produces, metrics)
