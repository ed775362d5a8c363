"""``package-docker``: a Docker build context serving the model over HTTP.

From an ONNX model (or a wheel made by ``package-python``, which then goes into the image),
it writes a Dockerfile on a pinned slim Python base, running as a non-root user with a
health check, a small standard-library HTTP server (``/predict``, ``/health``,
``/metadata``), pinned requirements, a README and the model's metadata. No Docker engine is
needed to make it; the context lints clean with hadolint.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from tinymlaas.domain import ArtifactKind
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer

__all__ = ["PackageDocker", "PackageDockerParams"]


class PackageDockerParams(Params):
    base_image: str = Field(default="python:3.11.11-slim-bookworm", max_length=200,
                            description="Base image, pinned by a full version tag or a "
                            "digest (never 'latest'); it must have Python 3.11 for the "
                            "pinned requirements.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port the server listens on "
                      "(the PORT environment variable overrides it at run time).")
    max_request_mib: int = Field(default=16, ge=1, le=1024, description="Largest request "
                                 "body accepted, in MiB (413 above).")

    @field_validator("base_image")
    @classmethod
    def _pinned(cls, value: str) -> str:
        from tinymlaas.installers.docker import check_base_image

        return check_base_image(value)


class PackageDocker(Transformer):
    name = "package-docker"
    version = "1"
    summary = "Package as a Docker build context: an HTTP inference server on a slim image."
    Params = PackageDockerParams
    accepts = frozenset({ArtifactKind.onnx, ArtifactKind.python_wheel})
    produces = ArtifactKind.docker_context
    needs = "none"
    uses_device = True

    def run(self, ctx: StepContext) -> StepOutput:
        from tinymlaas.installers.docker import build_context

        params: PackageDockerParams = ctx.params
        ctx.progress(0.1, "writing the build context")
        built = build_context(ctx.input_path, ctx.input_kind, ctx.out_dir / "docker-context",
                              base_image=params.base_image, port=params.port,
                              max_request_bytes=params.max_request_mib * 1024**2,
                              device=ctx.device)
        ctx.log.info("build context with %d files, %d bytes", len(built.files),
                     built.total_bytes)
        return StepOutput(built.path, self.produces,
                          {"context_files": len(built.files), "context_bytes": built.total_bytes,
                           "model_sha256": built.metadata["model"]["sha256"],
                           "base_image": params.base_image, "from_wheel": built.wheel is not None})
