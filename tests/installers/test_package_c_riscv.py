"""package-c on RISC-V: the bundle's rv32imc firmware (picolibc, semihosting) builds
warning-free and, under qemu-system-riscv32 -machine virt, prints the host's line."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from installer_models import float_model, int8_input_model, qdq_model, reference, two_io_model

import helpers
from tinymlaas.compiler import HostModel
from tinymlaas.compiler.api import compile_onnx
from tinymlaas.devices.catalog import get_device
from tinymlaas.domain import ArtifactKind
from tinymlaas.transformers.base import StepContext
from tinymlaas.transformers.package.package_c import PackageC, PackageCParams

GCC = "riscv64-unknown-elf-gcc"
RV32IMC = ("-march=rv32imc", "-mabi=ilp32")
_COMPILER_TESTS = Path(__file__).resolve().parents[1] / "compiler"


def _float_ops_model(path: Path) -> Path:
    """The compiler tests' float graph with sigmoid, tanh and softmax (libm's expf, tanhf)."""
    spec = importlib.util.spec_from_file_location("package_c_riscv_graphs",
                                                  _COMPILER_TESTS / "graphs.py")
    graphs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graphs)
    onnx.save(graphs.float_ops_graph(seed=3), str(path))
    return path


MODELS = {"qdq": qdq_model, "flt": float_model, "i8": int8_input_model, "two": two_io_model,
          "fops": _float_ops_model}


def _need_riscv() -> None:
    helpers.need_service(
        bool(shutil.which(GCC) and shutil.which("qemu-system-riscv32") and shutil.which("make")
             and shutil.which("cc")),
        "the RISC-V toolchain (gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf "
        "qemu-system-misc), make and cc")


def _make(bundle: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(["make", "-s", "-C", str(bundle), *args], capture_output=True,
                          text=True, timeout=180, check=False)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """int8 QDQ (float I/O), float, int8 I/O and two-in two-out ONNX models."""
    root = tmp_path_factory.mktemp("package-c-riscv-models")
    return {name: build(root / f"{name}.onnx") for name, build in MODELS.items()}


@pytest.fixture(scope="module")
def bundles(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One bundle per model, packaged for the Cortex-M4 device (no ELF probe)."""
    root = tmp_path_factory.mktemp("package-c-riscv")
    paths = {}
    for name, model in models.items():
        ctx = StepContext(input_path=model, input_kind=ArtifactKind.onnx,
                          params=PackageCParams(name=name, measure_elf=False),
                          out_dir=root / name / "out", work_dir=root / name / "work",
                          device=get_device("stm32-nucleo-l4r5zi"))
        paths[name] = PackageC().run(ctx).path
    return paths


def _inputs(bundle: Path, seed: int) -> list[np.ndarray]:
    """Random arrays for the bundle's inputs, from its manifest."""
    rng = np.random.default_rng(seed)
    arrays = []
    for spec in json.loads((bundle / "manifest.json").read_text())["inputs"]:
        if spec["dtype"].startswith("float"):
            arrays.append(rng.normal(size=spec["shape"]).astype(np.float32))
        else:
            info = np.iinfo(np.dtype(spec["dtype"]))
            arrays.append(rng.integers(info.min, info.max + 1, spec["shape"])
                          .astype(spec["dtype"]))
    return arrays


@pytest.mark.parametrize("name", list(MODELS))
def test_riscv_prints_the_host_line(name: str, models, bundles, tmp_path: Path) -> None:
    _need_riscv()
    bundle = bundles[name]
    arrays = _inputs(bundle, seed=len(name) + 7)
    raw = tmp_path / "x.bin"
    raw.write_bytes(b"".join(a.tobytes() for a in arrays))
    _make(bundle, "host", "riscv-firmware")
    host = subprocess.run([str(bundle / "build" / "host" / "example"), str(raw)],
                          capture_output=True, text=True, check=True).stdout
    riscv = _make(bundle, "riscv", f"INPUT={raw}").stdout
    assert host.endswith("\n") and host.count("\n") == 1
    if name == "fops":
        # picolibc's expf and tanhf may differ from glibc's in the last bit.
        assert riscv.endswith("\n") and len(riscv.split()) == len(host.split())
        np.testing.assert_allclose(np.array(riscv.split(), np.float32),
                                   np.array(host.split(), np.float32), rtol=1e-6, atol=1e-7)
    else:
        # The kernels call no libm function and both builds round every float operation
        # to nearest (soft float on rv32imc, the host's FPU; no contraction under
        # -std=c99): the lines are equal to the last digit.
        assert riscv == host
    compiled = compile_onnx(models[name], tmp_path / "ref", name=name)
    outputs = HostModel(compiled).run(*arrays)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    expected = np.concatenate([np.asarray(o).reshape(-1) for o in outputs])
    got = np.array(host.split(), expected.dtype)
    np.testing.assert_array_equal(got, expected)
    if compiled.outputs[0].dtype.startswith("float"):
        feeds = {spec.name: a for spec, a in zip(compiled.inputs, arrays, strict=True)}
        onnx_runtime = np.concatenate([o.reshape(-1) for o in reference(models[name], feeds)])
        # The QDQ model's kernels requantize in integer arithmetic; ONNX Runtime may round
        # an intermediate value to the neighbouring quantization step.
        tolerance = 0.1 if name == "qdq" else 1e-4
        np.testing.assert_allclose(got, onnx_runtime, rtol=tolerance, atol=tolerance)


def test_riscv_firmware_is_rv32imc_soft_float(bundles) -> None:
    _need_riscv()
    bundle = bundles["qdq"]
    _make(bundle, "riscv-firmware")
    elf = bundle / "build" / "riscv" / "example.elf"
    header = subprocess.run(["riscv64-unknown-elf-readelf", "-hA", str(elf)],
                            capture_output=True, text=True, check=True).stdout
    assert "ELF32" in header and "RISC-V" in header, header
    assert "RVC, soft-float ABI" in header, header
    arch = next(line for line in header.splitlines() if "Tag_RISCV_arch" in line)
    assert "rv32i2p" in arch and "_m2p" in arch and "_c2p" in arch, arch
    assert "_f2p" not in arch and "_a2p" not in arch, arch
    symbols = subprocess.run(["riscv64-unknown-elf-nm", str(elf)], capture_output=True,
                             text=True, check=True).stdout
    arena = json.loads((bundle / "manifest.json").read_text())["memory"]["arena_bytes"]
    address = int(next(line.split()[0] for line in symbols.splitlines()
                       if line.endswith(" qdq_arena")), 16)
    assert 0x80400000 <= address < 0x80800000 - arena


def test_riscv_sources_warning_free_with_pedantic(bundles) -> None:
    _need_riscv()
    for bundle in bundles.values():
        sources = sorted(str(p) for p in (bundle / "src").glob("*.c"))
        proc = subprocess.run([GCC, *RV32IMC, "--specs=picolibc.specs", "-Os", "-std=c99",
                               "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only",
                               "-I", str(bundle / "src"), *sources,
                               str(bundle / "examples" / "main.c")],
                              capture_output=True, text=True, check=False)
        assert proc.returncode == 0 and proc.stderr == "", proc.stderr


def test_riscv_missing_input_fails(bundles, tmp_path: Path) -> None:
    _need_riscv()
    bundle = bundles["i8"]
    usage = _make(bundle, "riscv", check=False)
    assert usage.returncode != 0 and "usage: make riscv INPUT=" in usage.stdout
    missing = tmp_path / "absent.bin"
    proc = _make(bundle, "riscv", f"INPUT={missing}", check=False)
    assert proc.returncode != 0 and proc.stdout == ""
    assert f"cannot open {missing}" in proc.stderr
    short = tmp_path / "short.bin"
    short.write_bytes(bytes(5))
    proc = _make(bundle, "riscv", f"INPUT={short}", check=False)
    assert proc.returncode != 0 and "expected 192 bytes" in proc.stderr


def test_bundle_ships_the_riscv_port(bundles) -> None:
    bundle = bundles["flt"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert "port/riscv/link.ld" in manifest["files"]
    script = (bundle / "port" / "riscv" / "link.ld").read_text()
    assert "__flash = 0x80000000;" in script and "INCLUDE picolibc.ld" in script
    makefile = (bundle / "Makefile").read_text()
    assert "-march=rv32imc -mabi=ilp32" in makefile and "--crt0=semihost" in makefile
    readme = (bundle / "README.md").read_text()
    assert "make riscv INPUT=input.bin" in readme
    assert manifest["target"]["cpu"] == "cortex-m4"
