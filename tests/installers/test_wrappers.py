"""The Arduino, Zephyr and PlatformIO wrappers in a C bundle: laid out to each spec, with
every referenced file present, and their sources (sketch included) compiling for Cortex-M."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import onnx
import pytest
import yaml

import helpers
from tinymlaas.domain import ArtifactKind
from tinymlaas.installers.wrappers import ARDUINO_KEYS
from tinymlaas.transformers.base import StepContext
from tinymlaas.transformers.package.package_c import PackageC, PackageCParams

M4 = ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16", "-Os")
STUB_ARDUINO = """\
#pragma once
#include <stdint.h>
class HardwareSerial {
 public:
  void begin(unsigned long) {}
  void print(const char*) {}
  void print(char) {}
  void print(int) {}
  void print(long) {}
  void print(unsigned) {}
  void print(float) {}
  void println() {}
  void println(int) {}
};
extern HardwareSerial Serial;
"""


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundle of an int8 tf2onnx-style graph named ``kws_net``."""
    compiler_tests = Path(__file__).resolve().parents[1] / "compiler"
    spec = importlib.util.spec_from_file_location("wrappers_graphs", compiler_tests / "graphs.py")
    graphs = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(graphs)
    root = tmp_path_factory.mktemp("wrappers")
    onnx.save(graphs.tflite_style_int8(seed=5), str(root / "m.onnx"))
    ctx = StepContext(input_path=root / "m.onnx", input_kind=ArtifactKind.onnx,
                      params=PackageCParams(name="kws_net", version="2.3.4", author="Edge Team",
                                            url="https://models.example.com/kws",
                                            measure_elf=False),
                      out_dir=root / "out", work_dir=root / "work")
    return PackageC().run(ctx).path


def _compile(compiler: str, sources: list[Path], includes: list[Path], tmp_path: Path,
             *extra: str) -> None:
    helpers.need_service(shutil.which(compiler) is not None, compiler)
    for source in sources:
        command = [compiler, *M4, *extra, "-Wall", "-Wextra", "-Werror", "-c", str(source),
                   "-o", str(tmp_path / (source.name + ".o"))]
        for include in includes:
            command += ["-I", str(include)]
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
        assert proc.returncode == 0, proc.stderr


def _same_sources(bundle: Path, src: Path) -> None:
    for name in ("kws_net.c", "kws_net.h", "kws_net_kernels.c", "kws_net_kernels.h"):
        assert (src / name).read_bytes() == (bundle / "src" / name).read_bytes()


def test_arduino_library(bundle: Path, tmp_path: Path) -> None:
    root = bundle / "wrappers" / "arduino" / "KwsNet"
    lines = (root / "library.properties").read_text().splitlines()
    properties = dict(line.split("=", 1) for line in lines)
    assert list(properties) == list(ARDUINO_KEYS)
    assert all(properties[key] for key in ARDUINO_KEYS)
    assert properties["name"] == "KwsNet" and properties["version"] == "2.3.4"
    assert properties["author"] == properties["maintainer"] == "Edge Team"
    assert properties["url"] == "https://models.example.com/kws"
    assert properties["architectures"] == "*"
    assert properties["category"] in {"Display", "Communication", "Signal Input/Output",
                                      "Sensors", "Device Control", "Timing",
                                      "Data Storage", "Data Processing", "Other"}
    for header in properties["includes"].split(","):
        assert (root / "src" / header.strip()).is_file()
    _same_sources(bundle, root / "src")
    sketch = root / "examples" / "KwsNetInference" / "KwsNetInference.ino"
    # The model keeps its input and output in its arena: the sketch runs it in place.
    text = sketch.read_text()
    assert "kws_net_invoke()" in text and "#define input0 (kws_net_input0())" in text
    stub = tmp_path / "stub"
    stub.mkdir()
    (stub / "Arduino.h").write_text(STUB_ARDUINO)
    _compile("arm-none-eabi-gcc", sorted((root / "src").glob("*.c")), [root / "src"],
             tmp_path, "-std=c99")
    _compile("arm-none-eabi-g++", [sketch], [root / "src", stub], tmp_path, "-x", "c++",
             "-std=c++11", "-fno-exceptions", "-fno-rtti")


def test_zephyr_module(bundle: Path, tmp_path: Path) -> None:
    root = bundle / "wrappers" / "zephyr" / "kws_net"
    module = yaml.safe_load((root / "zephyr" / "module.yml").read_text())
    assert module["name"] == "kws_net"
    assert set(module["build"]) == {"cmake", "kconfig"}
    cmake_dir = root / module["build"]["cmake"]
    cmake = (cmake_dir / "CMakeLists.txt").read_text()
    assert "zephyr_library()" in cmake and "if(CONFIG_KWS_NET)" in cmake
    for source in re.findall(r"\bsrc/\S+\.c\b", cmake):
        assert (cmake_dir / source).is_file()
    kconfig = (root / module["build"]["kconfig"]).read_text()
    assert re.search(r"^config KWS_NET\n\tbool ", kconfig, re.MULTILINE)
    assert re.search(r"^config KWS_NET_ARENA_ATTR\n\tstring ", kconfig, re.MULTILINE)
    _same_sources(bundle, root / "src")
    _compile("arm-none-eabi-gcc", sorted((root / "src").glob("*.c")), [root / "src"], tmp_path,
             "-std=c99")


def test_wrapper_metadata_rejects_multiline_values() -> None:
    with pytest.raises(ValueError):
        PackageCParams(author="a\nname=evil")
    with pytest.raises(ValueError):
        PackageCParams(version="1.0")


def test_platformio_library(bundle: Path, tmp_path: Path) -> None:
    root = bundle / "wrappers" / "platformio" / "kws_net"
    manifest = json.loads((root / "library.json").read_text())
    assert manifest["name"] == "kws_net" and manifest["version"] == "2.3.4"
    assert manifest["frameworks"] == "*" and manifest["platforms"] == "*"
    assert manifest["authors"] == [{"name": "Edge Team", "maintainer": True}]
    assert manifest["homepage"] == "https://models.example.com/kws"
    assert (root / manifest["build"]["srcDir"]).is_dir()
    assert (root / manifest["build"]["includeDir"] / manifest["headers"]).is_file()
    examples = []
    for example in manifest["examples"]:
        for name in example["files"]:
            examples.append(root / example["base"] / name)
            assert examples[-1].is_file()
    _same_sources(bundle, root / "src")
    sources = sorted((root / "src").glob("*.c")) + examples
    _compile("arm-none-eabi-gcc", sources, [root / manifest["build"]["includeDir"]], tmp_path,
             "-std=c99")
    # and the example links into an image with the model
    objects = [str(tmp_path / (s.name + ".o")) for s in sources]
    proc = subprocess.run(["arm-none-eabi-gcc", *M4, "--specs=nosys.specs", *objects, "-lm",
                           "-o", str(tmp_path / "pio.elf")], capture_output=True, text=True,
                          check=False)
    assert proc.returncode == 0, proc.stderr
