"""Compilation targets: by name, alias or catalog device, their kernel sets and flags, and
the compile-c parameters that choose them (the former ``cortex_m: true`` included)."""

from __future__ import annotations

from importlib import resources

import pytest
from pydantic import ValidationError

from helpers import need_service
from tinymlaas.compiler.targets import TARGETS, get_target, startup_source, target_for_device
from tinymlaas.compiler.targets.qemu import build_bare_metal, run_bare_metal, tools_missing
from tinymlaas.devices import get_device, load_catalog
from tinymlaas.errors import InvalidInputError, StepFailedError
from tinymlaas.installers.c_bundle import CPU_FLAGS, QEMU_MACHINES
from tinymlaas.transformers.compile_c import CompileParams


def test_named_targets_and_their_kernel_sets() -> None:
    assert get_target().name == "host" and get_target().kernels == "portable"
    assert get_target(None).cflags == ()
    m4 = get_target("cortex-m4")
    assert (m4.isa, m4.cpu, m4.features, m4.kernels, m4.qemu_machine) == (
        "armv7e-m", "cortex-m4", ("dsp", "fpu"), "cortex-m-dsp", "mps2-an386")
    assert m4.cflags == ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16")
    assert get_target("Cortex-M4F") == m4
    assert get_target("cortex-m0+").name == "cortex-m0plus"
    assert {name for name, t in TARGETS.items() if t.kernels == "cortex-m-dsp"} == {
        "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55"}
    assert get_target("cortex-m55").has("mve") and not get_target("cortex-m3").has("dsp")
    # The C bundle's Makefile builds every Cortex-M target with the target's flags and runs
    # the ones with a QEMU board on that board.
    makefile = resources.files("tinymlaas.installers").joinpath(
        "files/c/Makefile.tmpl").read_text("utf-8")
    assert set(CPU_FLAGS) == {name for name, t in TARGETS.items() if t.cortex_m}
    for cpu, flags in CPU_FLAGS.items():
        assert f"CPUFLAGS_{cpu} := {' '.join(flags)}\n" in makefile
        board = TARGETS[cpu].qemu_machine
        assert (f"MACHINE_{cpu} := {board}\n" in makefile) == (board is not None)
        assert QEMU_MACHINES.get(cpu) == board


def test_targets_from_the_device_catalog() -> None:
    nucleo = get_target("stm32-nucleo-l4r5zi")
    assert (nucleo.name, nucleo.kernels, nucleo.device) == (
        "cortex-m4", "cortex-m-dsp", "stm32-nucleo-l4r5zi")
    pico = get_target("raspberry-pi-pico")
    assert (pico.name, pico.kernels, pico.features) == ("cortex-m0plus", "portable", ())
    alif = get_target(get_device("alif-ensemble-e7"))
    assert alif.features == ("dsp", "fpu", "mve") and alif.kernels == "cortex-m-dsp"
    pi = get_target("raspberry-pi-4")
    assert (pi.name, pi.isa, pi.cpu, pi.cflags, pi.kernels) == (
        "cortex-a72", "cortex-a72", None, (), "portable")
    assert not pi.cortex_m and nucleo.cortex_m
    for device in load_catalog():  # every catalog device has a target
        target = target_for_device(device)
        assert target.device == device.name
        assert (target.kernels == "cortex-m-dsp") == ("dsp" in device.features
                                                       and target.cortex_m)


def test_a_device_without_fpu_or_dsp_gets_soft_float_and_portable_kernels() -> None:
    m33 = get_device("nrf5340-dk").model_copy(update={"features": ["trustzone"]})
    target = target_for_device(m33)
    assert target.cflags == ("-mcpu=cortex-m33+nodsp", "-mthumb", "-mfloat-abi=soft")
    assert target.kernels == "portable" and target.features == ()
    m55 = get_device("arm-corstone-300").model_copy(update={"features": ["dsp", "helium"]})
    assert target_for_device(m55).cflags == ("-mcpu=cortex-m55+nofp", "-mthumb",
                                             "-mfloat-abi=soft")


def test_kernel_set_overrides_and_refusals() -> None:
    assert get_target("cortex-m4", kernels="portable").kernels == "portable"
    assert get_target("cortex-m4", kernels="auto").kernels == "cortex-m-dsp"
    with pytest.raises(InvalidInputError, match="cortex-m-dsp kernels need a CPU with the DSP"):
        get_target("cortex-m0plus", kernels="cortex-m-dsp")
    with pytest.raises(InvalidInputError, match="Unknown kernel set 'neon'"):
        get_target("host", kernels="neon")
    with pytest.raises(InvalidInputError, match=r"Unknown target 'pdp-11'.*cortex-m4"):
        get_target("pdp-11")
    assert "Reset_Handler" in startup_source()


def test_compile_c_parameters_choose_the_target() -> None:
    assert CompileParams().target == "host" and CompileParams().kernels == "auto"
    # The former boolean still works: it means a Cortex-M4, and keys the cache the same way.
    old = CompileParams.model_validate({"cortex_m": True})
    assert old.target == "cortex-m4" and old.cortex_m is None
    assert old.model_dump() == CompileParams(target="cortex-m4").model_dump()
    assert CompileParams.model_validate({"cortex_m": False}).target == "host"
    # Forms and `transformers show` offer only the new parameters.
    assert {"target", "kernels"} <= set(CompileParams.model_json_schema()["properties"])
    assert "cortex_m" not in CompileParams.model_json_schema()["properties"]
    assert CompileParams(target="stm32f746-discovery", cortex_m=True).target == \
        "stm32f746-discovery"
    with pytest.raises(ValidationError, match="Unknown target 'z80'"):
        CompileParams(target="z80")
    with pytest.raises(ValidationError, match="not a Cortex-M"):
        CompileParams(target="raspberry-pi-4", cortex_m=True)
    with pytest.raises(ValidationError, match="DSP extension"):
        CompileParams(target="raspberry-pi-pico", kernels="cortex-m-dsp")
    with pytest.raises(ValidationError):
        CompileParams(kernels="helium")


def test_bare_metal_programs_on_the_mps2_boards(tmp_path) -> None:
    missing = tools_missing()
    need_service(not missing, " and ".join(missing) or "the Arm toolchain")
    source = tmp_path / "main.c"
    source.write_text('void tm_semihost_write0(const char* text);\n'
                      'int main(void) { tm_semihost_write0("HELLO " TM_WORD "\\n"); '
                      'return TM_STATUS; }\n', encoding="utf-8")
    for target in ("cortex-m3", "cortex-m7"):
        elf = build_bare_metal([source], tmp_path / target, target,
                               extra_flags=("-DTM_WORD=\"ok\"", "-DTM_STATUS=0"))
        assert "HELLO ok" in run_bare_metal(elf, target, timeout=60)
    failing = build_bare_metal([source], tmp_path / "fail", "cortex-m4",
                               extra_flags=("-DTM_WORD=\"bad\"", "-DTM_STATUS=3"))
    with pytest.raises(StepFailedError, match="failed under QEMU"):
        run_bare_metal(failing, "cortex-m4", timeout=60)
    with pytest.raises(StepFailedError, match="build failed"):
        build_bare_metal([source], tmp_path / "broken", "cortex-m4")  # TM_WORD undefined
    with pytest.raises(InvalidInputError, match="No QEMU MPS2 board runs cortex-m33"):
        build_bare_metal([source], tmp_path / "m33", "cortex-m33")
