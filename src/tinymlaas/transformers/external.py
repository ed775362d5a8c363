"""``external``: any command or container image that honours the file contract.

The contract, the same for a local command and a container image:

* ``/in`` (``{in}``): a directory holding the input artifact (``model.onnx`` etc.),
* ``/out`` (``{out}``): an empty directory the step fills,
* ``params.json`` (``{params}``): the step's ``config`` object,
* ``/out/metrics.json`` (optional): a JSON object of numbers to record.

For a command, ``{in}``, ``{out}`` and ``{params}`` in its arguments are replaced by the real
paths (other braces are left as they are), which are also in ``TINYMLAAS_IN``,
``TINYMLAAS_OUT`` and ``TINYMLAAS_PARAMS``. For an image, the directories are mounted at
``/in`` and ``/out`` and params at ``/params.json``.
A directory-shaped output kind takes the whole ``out`` directory; a file kind takes the one
file in it (``metrics.json`` aside). Only regular files and directories are taken.

Both run contained (see :mod:`tinymlaas.transformers.sandbox`): a fresh working directory
outside the server's data, a minimal environment (the declared ``env`` and the contract
variables, nothing of the server's), their own process group, killed at the step's
deadline. A command runs under rlimits, as the unprivileged sandbox user when the server is
root (as the server's own user otherwise). An image runs with no network, a read-only root
file system, as uid 65534, without capabilities or privilege escalation, and with the
step's memory limit and a process cap.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from tinymlaas.domain import ArtifactKind
from tinymlaas.domain.entities import DIRECTORY_KINDS, MODEL_KINDS
from tinymlaas.errors import InvalidInputError, StepFailedError
from tinymlaas.transformers import sandbox
from tinymlaas.transformers.base import Params, StepContext, StepOutput, Transformer

_ACCEPTED = frozenset(MODEL_KINDS | DIRECTORY_KINDS | {ArtifactKind.bundle_zip, ArtifactKind.file})
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_IMAGE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/:@-]{0,254}")
#: Environment a ``docker`` client needs to reach its daemon (never given to the container).
_DOCKER_CLIENT_ENV = ("DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG", "DOCKER_CERT_PATH",
                      "DOCKER_TLS_VERIFY")
_METRICS_BYTES = 1 << 20
_PLACEHOLDER = re.compile(r"\{(in|out|params)\}")


class ExternalParams(Params):
    command: list[str] | None = Field(default=None, description="argv, with {in} {out} {params}.")
    image: str | None = Field(default=None, description="A container image (needs Docker).")
    produces: ArtifactKind = Field(default=ArtifactKind.onnx, description="Output kind.")
    config: dict[str, Any] = Field(default_factory=dict, description="Written to params.json.")
    env: dict[str, str] = Field(default_factory=dict, description="Extra environment (the "
                                "step sees only this and the contract variables).")

    @model_validator(mode="after")
    def _one_of(self) -> ExternalParams:
        if (self.command is None) == (self.image is None):
            raise ValueError("give exactly one of 'command' or 'image'")
        if self.command is not None and not self.command:
            raise ValueError("'command' must not be empty")
        if self.command is not None and any("\0" in arg for arg in self.command):
            raise ValueError("'command' arguments must not contain NUL characters")
        if self.image is not None and not _IMAGE.fullmatch(self.image):
            raise ValueError("'image' must be an image reference such as acme/tool:1.2 "
                             "(letters, digits and . _ / : @ -, not starting with -)")
        return self

    @field_validator("env")
    @classmethod
    def _env_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name, text in value.items():
            if not _ENV_NAME.fullmatch(name):
                raise ValueError(f"environment variable name {name!r} is not valid "
                                 "(letters, digits and _, not starting with a digit)")
            if "\0" in text:
                raise ValueError(f"environment variable {name} must not contain NUL")
        return value


def docker_argv(image: str, in_dir: str, out_dir: str, params: str, *, memory_mb: int = 8192,
                pids_limit: int = 256, env: Mapping[str, str] | None = None,
                name: str | None = None) -> list[str]:
    """The ``docker run`` line that maps the file contract onto a hardened container: no
    network, read-only root, uid 65534, no capabilities, no privilege escalation, the
    step's memory (no extra swap), a process cap, a private ``/tmp``, and only ``env``."""
    uid = sandbox.CONTAINER_USER
    argv = ["docker", "run", "--rm", "--network=none", "--read-only",
            "--user", f"{uid}:{uid}", "--cap-drop=ALL", "--security-opt=no-new-privileges",
            f"--memory={memory_mb}m", f"--memory-swap={memory_mb}m",
            f"--pids-limit={pids_limit}", "--tmpfs", "/tmp"]
    if name is not None:
        argv += ["--name", name]
    for key, value in {**(env or {}), "TINYMLAAS_IN": "/in", "TINYMLAAS_OUT": "/out",
                       "TINYMLAAS_PARAMS": "/params.json"}.items():
        argv += ["-e", f"{key}={value}"]
    return [*argv, "-v", f"{in_dir}:/in:ro", "-v", f"{out_dir}:/out",
            "-v", f"{params}:/params.json:ro", image]


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
        policy = sandbox.current_policy().with_deadline()
        # A command drops root; the docker client needs the daemon, its container drops root.
        identity = sandbox.sandbox_identity(policy.user) if params.command is not None else None
        workdir = sandbox.working_dir(policy, identity)
        container = None if params.image is None else f"tinymlaas-step-{uuid.uuid4().hex[:16]}"
        env: dict[str, str] = {}
        done: sandbox.Completed | None = None
        try:
            argv, env = self._prepare(ctx, params, policy, workdir, identity, container)
            ctx.log.info("running %s", " ".join(argv))
            limits = sandbox.resource_limits(policy, identity.uid if identity else None) \
                if params.command is not None else None
            try:
                done = sandbox.run_contained(argv, cwd=workdir, env=env, identity=identity,
                                             limits=limits, timeout_s=policy.remaining_s(),
                                             contained=policy.contained)
            except FileNotFoundError as exc:
                raise InvalidInputError(f"external command not found: {argv[0]}") from exc
            except (OSError, ValueError, subprocess.SubprocessError) as exc:
                raise StepFailedError(f"the external command {argv[0]} could not start: "
                                      f"{getattr(exc, 'strerror', None) or exc}") from exc
            if done.stdout:
                ctx.log.info("%s", done.stdout)
            if done.stderr:
                ctx.log.info("%s", done.stderr)
            if done.timed_out:
                raise StepFailedError(f"the external command ran past the step's time limit "
                                      f"({policy.timeout_s:g} s) and was stopped")
            if done.returncode < 0:
                raise StepFailedError(f"the external command was killed by "
                                      f"{_signal_name(-done.returncode)}")
            if done.returncode != 0:
                tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or [""]
                raise StepFailedError(f"external command exited with {done.returncode}: "
                                      f"{tail[0][:500]}")
            out_dir = ctx.work_dir / "out"
            if out_dir.exists():
                shutil.rmtree(out_dir)
            sandbox.collect_output(workdir / "out", out_dir, identity)
        finally:
            if container is not None and env and (done is None or done.timed_out
                                                  or done.returncode < 0):
                _remove_container(container, env)
            sandbox.remove_tree(workdir)
        return self._output(params, out_dir)

    @staticmethod
    def _prepare(ctx: StepContext, params: ExternalParams, policy: sandbox.Policy,
                 workdir: Path, identity: sandbox.Identity | None, container: str | None
                 ) -> tuple[list[str], dict[str, str]]:
        """Fill the working directory with the contract; the argv and environment."""
        in_dir, out_dir, params_file = workdir / "in", workdir / "out", workdir / "params.json"
        if ctx.input_path.is_dir():
            shutil.copytree(ctx.input_path, in_dir, symlinks=True)
        else:
            in_dir.mkdir()
            shutil.copyfile(ctx.input_path, in_dir / _input_name(ctx.input_kind))
        out_dir.mkdir()
        params_file.write_text(json.dumps(params.config))
        paths = {"in": str(in_dir), "out": str(out_dir), "params": str(params_file)}
        contract = {"TINYMLAAS_IN": paths["in"], "TINYMLAAS_OUT": paths["out"],
                    "TINYMLAAS_PARAMS": paths["params"]}
        if params.command is not None:
            if identity is not None:
                sandbox.give_to(workdir, identity.uid, identity.gid)
            argv = [_PLACEHOLDER.sub(lambda m: paths[m.group(1)], arg) for arg in params.command]
            return argv, sandbox.minimal_env(workdir, params.env, contract)
        _open_to_container(workdir, in_dir, out_dir, params_file)
        env = sandbox.minimal_env(workdir, {}, {
            name: os.environ[name] for name in _DOCKER_CLIENT_ENV if name in os.environ})
        argv = docker_argv(params.image or "", paths["in"], paths["out"], paths["params"],
                           memory_mb=policy.memory_mb, pids_limit=policy.max_processes,
                           env=params.env, name=container)
        return argv, env

    @staticmethod
    def _output(params: ExternalParams, out_dir: Path) -> StepOutput:
        metrics: dict[str, Any] = {}
        metrics_file = out_dir / "metrics.json"
        if metrics_file.is_file():
            if metrics_file.stat().st_size > _METRICS_BYTES:
                raise StepFailedError("metrics.json is over 1 MB")
            try:
                metrics = json.loads(metrics_file.read_text())
            except (ValueError, UnicodeDecodeError) as exc:
                raise StepFailedError(f"metrics.json is not valid JSON: {exc}") from None
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


def _open_to_container(workdir: Path, in_dir: Path, out_dir: Path, params_file: Path) -> None:
    """Let the container's uid 65534 read the input and write the output: by ownership when
    we are root, else by mode (the working directory itself stays private)."""
    if os.geteuid() == 0:
        for path in (in_dir, out_dir, params_file):
            sandbox.give_to(path, sandbox.CONTAINER_USER, sandbox.CONTAINER_USER)
        return
    for base, _dirs, files in os.walk(in_dir):
        os.chmod(base, 0o755)
        for name in files:
            os.chmod(os.path.join(base, name), 0o644, follow_symlinks=False)
    params_file.chmod(0o644)
    out_dir.chmod(0o777)


def _remove_container(name: str, env: Mapping[str, str]) -> None:
    """Stop the step's container if it outlived its client (killed at the deadline)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(["docker", "rm", "-f", name], env=dict(env), capture_output=True,
                       timeout=60, check=False)


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    why = {"SIGXCPU": " (its CPU time limit)", "SIGXFSZ": " (its file size limit)",
           "SIGKILL": " (a limit, or it was stopped)"}.get(name, "")
    return f"{name}{why}"


def _input_name(kind: ArtifactKind) -> str:
    return {ArtifactKind.onnx: "model.onnx", ArtifactKind.torch_exported: "model.pt2",
            ArtifactKind.torchscript: "model.pt", ArtifactKind.bundle_zip: "bundle.zip"
            }.get(kind, "input")
