"""package-c: the C bundle builds warning-free, runs on the host and under QEMU with the
same output as the compiler's own host build, and its manifest is true to its files."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from installer_models import compiler_module

import helpers
from tinymlaas.compiler import HostModel
from tinymlaas.compiler.api import CompileResult, compile_onnx
from tinymlaas.compiler.codegen import split_source
from tinymlaas.devices.catalog import get_device
from tinymlaas.domain import ArtifactKind
from tinymlaas.errors import InvalidInputError, UnsupportedModelError
from tinymlaas.transformers.base import StepContext
from tinymlaas.transformers.package.package_c import PackageC, PackageCParams

ARM_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "arm-none-eabi-objdump", "make")


def _need(*tools: str) -> None:
    missing = [t for t in tools if shutil.which(t) is None]
    helpers.need_service(not missing, " and ".join(missing) or "the build tools")


def _package(model: Path, root: Path, name: str, device: str | None = "stm32-nucleo-l4r5zi",
             kind: ArtifactKind = ArtifactKind.onnx, **params) -> Path:
    ctx = StepContext(input_path=model, input_kind=kind,
                      params=PackageCParams(name=name, **params), out_dir=root / "out",
                      work_dir=root / "work",
                      device=get_device(device) if device else None)
    output = PackageC().run(ctx)
    assert output.kind is ArtifactKind.c_bundle
    return output.path


def _make(bundle: Path, *args: str, timeout: float = 120) -> str:
    proc = subprocess.run(["make", "-s", "-C", str(bundle), *args], capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _values(line: str, dtype: str) -> np.ndarray:
    parts = line.split()
    if dtype.startswith("float"):
        return np.array([float(p) for p in parts], np.float32)
    return np.array([int(p) for p in parts], np.dtype(dtype))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """int8 QDQ (tf2onnx style, with pooling), float residual block, int8 QDQ residual
    block (ONNX Runtime quantization) and a float graph with sigmoid/tanh/softmax."""
    graphs = compiler_module("graphs")
    root = tmp_path_factory.mktemp("package-c-models")
    paths = {}
    for name, model in (("tfl", graphs.tflite_style_int8(seed=1)),
                        ("res", graphs.residual_block(seed=2)),
                        ("fops", graphs.float_ops_graph(seed=3))):
        paths[name] = root / f"{name}.onnx"
        onnx.save(model, str(paths[name]))
    calibration = np.random.default_rng(4).normal(size=(16, 4, 8, 8)).astype(np.float32)
    paths["qres"] = compiler_module("compiler_models").quantize_qdq(
        paths["res"], root / "qres.onnx", calibration, per_channel=True)
    return paths


@pytest.fixture(scope="module")
def bundles(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("package-c-bundles")
    return {name: _package(path, root / name, name) for name, path in models.items()}


def _random_input(result: CompileResult, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in result.inputs:
        if spec.dtype.startswith("float"):
            arrays.append(rng.normal(size=spec.shape).astype(np.float32))
        else:
            info = np.iinfo(np.dtype(spec.dtype))
            arrays.append(rng.integers(info.min, info.max + 1, spec.shape).astype(spec.dtype))
    return arrays


@pytest.mark.parametrize("name", ["tfl", "qres", "res", "fops"])
def test_host_and_qemu_print_the_compilers_output(name: str, models, bundles,
                                                  tmp_path: Path) -> None:
    _need(*ARM_TOOLS, "qemu-system-arm", "cc")
    bundle = bundles[name]
    compiled = compile_onnx(models[name], tmp_path / "ref", name=name)
    arrays = _random_input(compiled, seed=len(name))
    raw = tmp_path / "input.bin"
    raw.write_bytes(b"".join(a.tobytes() for a in arrays))
    _make(bundle, "host", "firmware")
    host_line = subprocess.run([str(bundle / "build" / "host" / "example"), str(raw)],
                               capture_output=True, text=True, check=True).stdout
    qemu_line = _make(bundle, "qemu", f"INPUT={raw}")
    assert host_line.endswith("\n") and host_line.count("\n") == 1
    spec = compiled.outputs[0]
    expected = np.asarray(HostModel(compiled).run(*arrays)).reshape(-1)
    got_host = _values(host_line, spec.dtype)
    got_qemu = _values(qemu_line.strip(), spec.dtype)
    assert got_host.size == expected.size
    if name == "fops":
        # expf/tanhf of glibc and newlib may differ in the last bit.
        np.testing.assert_allclose(got_qemu, got_host, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got_host, expected, rtol=1e-6, atol=1e-7)
    else:
        assert qemu_line == host_line
        np.testing.assert_array_equal(got_host, expected)
    if spec.dtype.startswith("float"):
        import onnxruntime as ort

        session = ort.InferenceSession(str(models[name]), providers=["CPUExecutionProvider"])
        feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays, strict=True)}
        reference = session.run(None, feeds)[0].reshape(-1)
        tolerance = 0.05 if name == "qres" else 1e-4
        np.testing.assert_allclose(got_host, reference, rtol=tolerance, atol=tolerance)


def test_cortex_m7_and_m55_build_and_m7_runs(bundles, tmp_path: Path) -> None:
    _need(*ARM_TOOLS, "qemu-system-arm")
    bundle = bundles["tfl"]
    raw = tmp_path / "x.bin"
    raw.write_bytes(np.random.default_rng(9).integers(-128, 128, 192, dtype=np.int8).tobytes())
    m4 = _make(bundle, "qemu", f"INPUT={raw}")
    m7 = _make(bundle, "qemu", "CPU=cortex-m7", f"INPUT={raw}")
    assert m7 == m4 and len(m4.split()) == 5
    _make(bundle, "firmware", "CPU=cortex-m55")
    for cpu, tags in (("cortex-m7", ("Tag_CPU_arch: v7E-M\n", "FPv5/FP-D16")),
                      ("cortex-m55", ("Tag_CPU_arch: v8.1-M.mainline\n", "Tag_MVE_arch"))):
        elf = bundle / "build" / cpu / "example.elf"
        attributes = subprocess.run(["arm-none-eabi-readelf", "-A", str(elf)],
                                    capture_output=True, text=True, check=True).stdout
        assert all(tag in attributes for tag in tags), attributes
        assert "Tag_ABI_VFP_args: VFP registers" in attributes


def test_warning_free_under_wall_wextra_werror(bundles) -> None:
    _need("cc", "arm-none-eabi-gcc")
    for bundle in bundles.values():
        sources = sorted(str(p) for p in (bundle / "src").glob("*.c"))
        for compiler, flags in (("cc", ["-O2"]), ("arm-none-eabi-gcc", [
                "-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os"])):
            proc = subprocess.run([compiler, *flags, "-std=c99", "-Wall", "-Wextra", "-Werror",
                                   "-pedantic", "-fsyntax-only", "-I", str(bundle / "src"),
                                   *sources, str(bundle / "examples" / "main.c")],
                                  capture_output=True, text=True, check=False)
            assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_manifest_hashes_and_figures(bundles, models) -> None:
    for name, bundle in bundles.items():
        manifest = json.loads((bundle / "manifest.json").read_text())
        files = sorted(p.relative_to(bundle).as_posix() for p in bundle.rglob("*")
                       if p.is_file() and "build" not in p.relative_to(bundle).parts
                       and p.name != "manifest.json")
        assert sorted(manifest["files"]) == files
        for rel, digest in manifest["files"].items():
            assert hashlib.sha256((bundle / rel).read_bytes()).hexdigest() == digest
        assert manifest["source_model"] == {
            "kind": "onnx", "file": f"{name}.onnx",
            "sha256": hashlib.sha256(models[name].read_bytes()).hexdigest()}
        header = (bundle / "src" / f"{name}.h").read_text()
        arena = int(re.search(rf"#define {name.upper()}_ARENA_BYTES (\d+)", header).group(1))
        assert manifest["memory"]["arena_bytes"] == arena
        assert manifest["target"]["device"] == "stm32-nucleo-l4r5zi"
        assert manifest["target"]["cpu"] == "cortex-m4"
        assert "-mfpu=fpv4-sp-d16" in manifest["target"]["cflags"]
        assert manifest["generator"]["name"] == "tinymlaas package-c"
    tfl = json.loads((bundles["tfl"] / "manifest.json").read_text())
    assert tfl["inputs"][0]["dtype"] == "int8" and tfl["inputs"][0]["shape"] == [1, 8, 8, 3]
    assert tfl["inputs"][0]["scale"] == pytest.approx(0.02)
    assert tfl["inputs"][0]["zero_point"] == -3
    assert tfl["outputs"][0]["zero_point"] == -128


def test_elf_flash_and_ram_within_10_percent_of_estimate(bundles) -> None:
    _need("arm-none-eabi-gcc", "arm-none-eabi-size")
    for name, bundle in bundles.items():
        manifest = json.loads((bundle / "manifest.json").read_text())
        elf, estimate = manifest["elf"], manifest["memory"]["estimate"]
        assert elf["measured"] is True, elf
        assert elf["text"] + elf["data"] == elf["flash_bytes"]
        assert elf["data"] + elf["bss"] == elf["ram_bytes"]
        assert elf["flash_bytes"] == pytest.approx(estimate["flash_bytes"], rel=0.10), name
        assert elf["ram_bytes"] == pytest.approx(estimate["ram_bytes"], rel=0.10), name
        assert elf["sections"][".rodata"] >= manifest["memory"]["const_bytes"]
        assert elf["bss"] >= manifest["memory"]["arena_bytes"]


def test_arena_attribute_places_the_arena(bundles) -> None:
    _need(*ARM_TOOLS)
    bundle = bundles["res"]
    # The value goes through the recipe's shell, quoted as a user would on the command line.
    attr = "-DRES_ARENA_ATTR='__attribute__((section(\".sram2\")))'"
    shutil.rmtree(bundle / "build", ignore_errors=True)
    _make(bundle, "firmware", f"CFLAGS_EXTRA={attr}")
    elf = bundle / "build" / "cortex-m4" / "example.elf"
    sizes = subprocess.run(["arm-none-eabi-size", "-A", str(elf)], capture_output=True,
                           text=True, check=True).stdout
    arena = json.loads((bundle / "manifest.json").read_text())["memory"]["arena_bytes"]
    assert re.search(rf"^\.sram2\s+{arena}\s", sizes, re.MULTILINE), sizes
    symbols = subprocess.run(["arm-none-eabi-objdump", "-t", str(elf)], capture_output=True,
                             text=True, check=True).stdout
    assert re.search(r"\.sram2\s+[0-9a-f]+\s+res_arena", symbols), symbols
    shutil.rmtree(bundle / "build")


def test_cmake_builds_the_library_and_example(bundles, tmp_path: Path) -> None:
    _need("cmake", "cc", "make")
    bundle = bundles["tfl"]
    build = tmp_path / "cmake"
    for command in (["cmake", "-S", str(bundle), "-B", str(build)],
                    ["cmake", "--build", str(build)]):
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (build / "libtfl.a").is_file()
    raw = tmp_path / "x.bin"
    raw.write_bytes(bytes(192))
    line = subprocess.run([str(build / "example"), str(raw)], capture_output=True, text=True,
                          check=True).stdout
    assert len(line.split()) == 5


def test_c_source_input_gives_the_same_sources(models, bundles, tmp_path: Path) -> None:
    compiled = compile_onnx(models["tfl"], tmp_path / "c-source", name="tfl")
    bundle = _package(compiled.directory, tmp_path / "from-c", "ignored",
                      kind=ArtifactKind.c_source, measure_elf=False)
    for rel in ("src/tfl.c", "src/tfl.h", "src/tfl_kernels.c", "src/tfl_kernels.h"):
        assert (bundle / rel).read_bytes() == (bundles["tfl"] / rel).read_bytes()
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["source_model"]["kind"] == "c-source"
    assert manifest["source_model"]["sha256"] == hashlib.sha256(
        compiled.source.read_bytes()).hexdigest()
    assert manifest["elf"] == {"measured": False, "reason": "not requested"}


def test_device_picks_the_cpu(models, tmp_path: Path) -> None:
    m7 = _package(models["res"], tmp_path / "m7", "res", device="stm32f746-discovery",
                  measure_elf=False)
    target = json.loads((m7 / "manifest.json").read_text())["target"]
    assert target["device"] == "stm32f746-discovery" and target["arch"] == "cortex-m7"
    assert target["cpu"] == "cortex-m7" and "-mcpu=cortex-m7" in target["cflags"]
    none = _package(models["res"], tmp_path / "none", "res", device=None, measure_elf=False)
    target = json.loads((none / "manifest.json").read_text())["target"]
    assert target["device"] is None and target["cpu"] == "cortex-m4"
    assert "CPU ?= cortex-m7" in (m7 / "Makefile").read_text()


def test_missing_toolchain_still_bundles(models, tmp_path: Path, monkeypatch) -> None:
    from tinymlaas.installers import c_bundle

    monkeypatch.setattr(c_bundle.shutil, "which", lambda tool: None)
    bundle = _package(models["res"], tmp_path / "b", "res")
    elf = json.loads((bundle / "manifest.json").read_text())["elf"]
    assert elf["measured"] is False and "arm-none-eabi-gcc" in elf["reason"]
    assert (bundle / "src" / "res_kernels.c").is_file()


def test_unsupported_model_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.onnx"
    onnx.save(compiler_module("graphs").unsupported_graph(), str(path))
    with pytest.raises(UnsupportedModelError) as info:
        _package(path, tmp_path / "b", "bad")
    assert "my_sine" in str(info.value.details) or "Sin" in str(info.value)
    assert not (tmp_path / "b" / "out" / "c-bundle" / "manifest.json").exists()


def test_c_source_without_model_json_is_invalid(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    with pytest.raises(InvalidInputError, match="compile-c"):
        _package(tmp_path / "src", tmp_path / "b", "x", kind=ArtifactKind.c_source)


def test_split_source_exports_prefixed_kernels(models, tmp_path: Path) -> None:
    compiled = compile_onnx(models["res"], tmp_path, name="res")
    split = split_source(compiled.source.read_text(), "res")
    assert split.exported == ("tm_conv2d_f32", "tm_conv2d_add_f32")
    header = split.files["res_kernels.h"]
    assert "#define tm_conv2d_f32 res_k_conv2d_f32" in header
    assert "void tm_conv2d_f32(" in header
    kernels = split.files["res_kernels.c"]
    assert "\nvoid tm_conv2d_f32(" in kernels and "static void tm_convtile_f32(" in kernels
    assert "TM_ALIGNED RES_ARENA_ATTR;" in split.files["res.c"]
    with pytest.raises(ValueError):
        split_source("int x;", "res")


def test_two_inputs_two_outputs_on_host_and_qemu(tmp_path: Path) -> None:
    _need(*ARM_TOOLS, "qemu-system-arm", "cc")
    from onnx import TensorProto, helper, numpy_helper

    gains = np.array([0.5, -2.0, 3.25], np.float32)
    gain = numpy_helper.from_array(gains, "gain")
    graph = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["sum"]),
         helper.make_node("Mul", ["a", "gain"], ["scaled"])], "two_io",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in "ab"],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3]) for n in ("sum", "scaled")],
        initializer=[gain])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = tmp_path / "two.onnx"
    onnx.save(model, str(path))
    bundle = _package(path, tmp_path / "b", "two")
    a = np.array([[1.5, 2.25, -3.0]], np.float32)
    b = np.array([[0.1, -7.0, 1e-3]], np.float32)
    raw = tmp_path / "ab.bin"
    raw.write_bytes(a.tobytes() + b.tobytes())
    _make(bundle, "host", "firmware")
    host = subprocess.run([str(bundle / "build" / "host" / "example"), str(raw)],
                          capture_output=True, text=True, check=True).stdout
    assert _make(bundle, "qemu", f"INPUT={raw}") == host
    np.testing.assert_array_equal(_values(host, "float32"),
                                  np.concatenate([(a + b).ravel(), (a * gains).ravel()]))
    short = tmp_path / "short.bin"
    short.write_bytes(a.tobytes())
    proc = subprocess.run([str(bundle / "build" / "host" / "example"), str(short)],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 2 and "expected 24 bytes" in proc.stderr


def test_pipeline_stores_the_bundle_for_the_runs_device(services, registered) -> None:
    from tinymlaas.domain import Pipeline, RunStatus

    model, dataset = registered
    pipeline = Pipeline.model_validate({"name": "c-bundle", "steps": [
        "export-onnx", "quantize-static", {"package-c": {"name": "digits"}}]})
    created = services.create_run(pipeline, model=model.id, dataset=dataset.id,
                                  device="stm32f746-discovery")
    run = services.execute_run(created.id)
    assert run.status is RunStatus.succeeded, run.error
    metrics = run.steps[-1].metrics
    assert metrics["target_cpu"] == "cortex-m7"
    assert metrics["arena_bytes"] > 0 and metrics["const_bytes"] > 10_000
    if metrics["elf_measured"]:
        assert metrics["elf_flash_bytes"] == pytest.approx(metrics["estimated_flash_bytes"],
                                                           rel=0.10)
    import zipfile

    with zipfile.ZipFile(services.artifact_path(run.steps[-1].output_sha)) as archive:
        names = set(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
    assert {"src/digits.c", "src/digits_kernels.c", "Makefile",
            "wrappers/arduino/Digits/library.properties"} <= names
    assert set(manifest["files"]) == names - {"manifest.json"}
    assert manifest["target"]["device"] == "stm32f746-discovery"


def test_same_model_gives_the_same_bundle(models, bundles, tmp_path: Path) -> None:
    again = _package(models["tfl"], tmp_path / "again", "tfl")
    first = json.loads((bundles["tfl"] / "manifest.json").read_text())
    second = json.loads((again / "manifest.json").read_text())
    assert second == first
    assert (again / "manifest.json").read_bytes() == (bundles["tfl"] / "manifest.json").read_bytes()


@pytest.mark.parametrize("cpu", ["cortex-m0plus", "cortex-m3", "cortex-m7", "cortex-m33",
                                 "cortex-m55"])
def test_estimate_holds_for_other_cpus(cpu: str, models, bundles, tmp_path: Path) -> None:
    _need("arm-none-eabi-gcc", "arm-none-eabi-size")
    from tinymlaas.installers.c_bundle import CPU_FLAGS, Target, estimate_memory, measure_elf

    for name in ("qres", "fops", "tfl"):
        compiled = compile_onnx(models[name], tmp_path / name, name=name)
        elf = measure_elf(bundles[name], compiled, Target(None, None, cpu, CPU_FLAGS[cpu]),
                          tmp_path / f"{name}-elf")
        estimate = estimate_memory(compiled, cpu)
        assert elf["flash_bytes"] == pytest.approx(estimate["flash_bytes"], rel=0.10), name
        assert elf["ram_bytes"] == pytest.approx(estimate["ram_bytes"], rel=0.10), name


def test_both_io_modes_build_run_and_measure(models, tmp_path: Path) -> None:
    """The example, firmware and size probe follow the mode: the input and output in the
    arena (the default) or in static arrays (``io: caller``); same output line, less RAM."""
    _need(*ARM_TOOLS, "qemu-system-arm", "cc")
    raw = tmp_path / "x.bin"
    raw.write_bytes(np.random.default_rng(3).normal(size=(1, 4, 8, 8)).astype(np.float32)
                    .tobytes())
    lines, ram = {}, {}
    for mode in ("arena", "caller"):
        bundle = _package(models["qres"], tmp_path / mode, "net", io=mode)
        header = (bundle / "src" / "net.h").read_text()
        assert f"#define NET_IO_IN_ARENA {int(mode == 'arena')}" in header
        example = (bundle / "examples" / "main.c").read_text()
        assert ("net_invoke()" in example) == (mode == "arena")
        _make(bundle, "host", "firmware")
        lines[mode] = subprocess.run([str(bundle / "build" / "host" / "example"), str(raw)],
                                     capture_output=True, text=True, check=True).stdout
        assert _make(bundle, "qemu", f"INPUT={raw}") == lines[mode]
        manifest = json.loads((bundle / "manifest.json").read_text())
        ram[mode] = manifest["elf"]["ram_bytes"]
        memory = manifest["memory"]
        assert memory["io_bytes"] == (0 if mode == "arena" else 2 * 4 * 8 * 8 * 4)
        assert 0.9 <= manifest["elf"]["ram_vs_estimate"] <= 1.1
    assert lines["arena"] == lines["caller"] and len(lines["arena"].split()) == 4 * 8 * 8
    assert ram["arena"] < ram["caller"]
