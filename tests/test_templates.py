"""Every technique family's template, run on the digits CNN for a Cortex-M4 board: each does
what its comment promises (fewer MACs, int8, a smaller student, C that fits, packages), and the
installers' runs are measured on the model they package."""

from __future__ import annotations

import shutil
import zipfile

import onnx

from helpers import need_service
from tinymlaas.domain import ArtifactKind, RunStatus
from tinymlaas.service.pipelines import load_pipeline
from tinymlaas.templates import template_path

DEVICE = "stm32-nucleo-l4r5zi"


def test_every_family_template_runs(services, registered) -> None:
    need_service(shutil.which("arm-none-eabi-gcc") is not None
                 and shutil.which("qemu-system-arm") is not None,
                 "the Cortex-M toolchain (gcc-arm-none-eabi, qemu-system-arm)")
    model, dataset = registered
    runs = {}
    for name in ("prune-int8", "qat-int8", "distill-int8", "c-int8", "c-library",
                 "signed-firmware", "python-wheel", "docker-image"):
        created = services.create_run(load_pipeline(template_path(name)), model=model.id,
                                      dataset=dataset.id, device=DEVICE)
        run = services.execute_run(created.id)
        assert run.status is RunStatus.succeeded, (name, run.error)
        assert run.result["accuracy"] >= run.baseline["accuracy"] - 3.0, name
        runs[name] = run

    def output(name: str):
        return services.meta.get_artifact(runs[name].output_sha)

    def int8_onnx(name: str) -> onnx.ModelProto:
        proto = onnx.load(str(services.artifact_path(runs[name].output_sha)))
        assert any(n.op_type == "QuantizeLinear" for n in proto.graph.node), name
        return proto

    prune = runs["prune-int8"]
    assert prune.result["macs"] <= 0.75 * prune.baseline["macs"]
    assert prune.result["file_bytes"] * 5 <= prune.baseline["file_bytes"]
    int8_onnx("prune-int8")
    int8_onnx("qat-int8")
    assert runs["qat-int8"].result["file_bytes"] * 3 <= runs["qat-int8"].baseline["file_bytes"]
    distill = runs["distill-int8"]
    assert distill.result["parameters"] <= 0.4 * distill.baseline["parameters"]
    int8_onnx("distill-int8")

    c_run = runs["c-int8"]
    assert output("c-int8").kind is ArtifactKind.c_source
    assert c_run.result["fit"]["fits"] and c_run.result["fit"]["device"] == DEVICE
    assert c_run.steps[-1].metrics["qemu_max_abs_diff_to_host"] == 0.0

    # installers: the run measures the int8 model that went into the package
    static_int8 = runs["c-library"].steps[2].output_sha
    for name, kind in (("c-library", ArtifactKind.c_bundle),
                       ("signed-firmware", ArtifactKind.signed_image),
                       ("python-wheel", ArtifactKind.python_wheel),
                       ("docker-image", ArtifactKind.docker_context)):
        assert output(name).kind is kind, name
        assert runs[name].steps[2].output_sha == static_int8, name  # one int8 model, cached
        assert runs[name].result == runs["c-library"].result, name
        packages = services.run_packages(runs[name])
        assert packages[-1].artifact.kind is kind and packages[-1].manifest, name

    bundle = services.run_packages(runs["c-library"])[0].manifest
    assert bundle["target"]["device"] == DEVICE
    firmware = services.run_packages(runs["signed-firmware"])[-1].manifest
    assert firmware["version"] == "1.0.0"
    assert firmware["key_fingerprint_sha256"] == services.signing_key().fingerprint
    wheel = output("python-wheel")
    assert wheel.filename.endswith("-py3-none-any.whl")
    with zipfile.ZipFile(services.artifact_path(runs["docker-image"].output_sha)) as context:
        names = set(context.namelist())
    assert "Dockerfile" in names and any(n.startswith("wheels/") for n in names)
