"""Compilation targets: the CPU a model is compiled for, its flags and its kernel set.

A :class:`Target` says what the generated C runs on: the instruction set, the features
that matter to the kernels (``dsp``: the Armv7E-M / Armv8-M DSP extension with SMLAD and
SXTB16; ``fpu``; ``mve``: Helium), the arena alignment, the GCC flags of a cross build,
the QEMU board that emulates it, and which kernel set (:mod:`tinymlaas.compiler.kernels`)
the code generator takes. Targets come by name (``host``, ``cortex-m4`` ...) or from a
device of the catalog (its ``arch`` and ``features``)::

    from tinymlaas.compiler.targets import get_target
    get_target("cortex-m4").kernels                 # 'cortex-m-dsp'
    get_target("stm32-nucleo-l4r5zi").name          # 'cortex-m4' (a catalog device)
    get_target("raspberry-pi-pico").kernels         # 'portable' (Cortex-M0+, no DSP)

This directory also holds ``startup.c``, the minimal Cortex-M startup (vectors, data and
bss set-up, FPU enable, semihosting) that firmware built for QEMU's MPS2 boards links.
"""

from __future__ import annotations

from importlib import resources

from pydantic import BaseModel, ConfigDict, Field

from tinymlaas.compiler.kernels import KERNEL_SETS, KernelSet
from tinymlaas.domain import Device
from tinymlaas.errors import InvalidInputError

__all__ = [
    "DEFAULT_TARGET",
    "TARGETS",
    "Target",
    "get_target",
    "startup_source",
    "target_for_device",
    "target_names",
]


class Target(BaseModel):
    """A CPU the generated C is built for."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field(description="target name: 'host', 'cortex-m4', ... or a non-Cortex-M "
                      "arch such as 'cortex-a72' (portable kernels)")
    isa: str = Field(description="instruction set: 'host', 'armv6-m', 'armv7-m', 'armv7e-m', "
                     "'armv8-m.main', 'armv8.1-m.main', or the device's arch")
    cpu: str | None = Field(default=None, description="GCC -mcpu value, for Cortex-M")
    features: tuple[str, ...] = Field(default=(), description="sorted: dsp, fpu, mve")
    alignment: int = Field(default=16, description="alignment of the arena in bytes")
    cflags: tuple[str, ...] = Field(default=(), description="GCC flags of a cross build "
                                    "(CPU, Thumb, float ABI); empty for the host")
    kernels: KernelSet = Field(default="portable", description="the kernel set: 'portable' "
                               "(C99) or 'cortex-m-dsp' (SMLAD/SXTB16 int8 kernels)")
    qemu_machine: str | None = Field(default=None, description="the qemu-system-arm MPS2 "
                                     "board that runs firmware for this CPU (M3, M4, M7)")
    device: str | None = Field(default=None, description="the catalog device it came from")

    @property
    def cortex_m(self) -> bool:
        """Whether the target is an Arm Cortex-M (a cross build with arm-none-eabi-gcc)."""
        return self.cpu is not None

    def has(self, feature: str) -> bool:
        """Whether the target has a feature (``dsp``, ``fpu``, ``mve``)."""
        return feature in self.features

    def with_kernels(self, kernels: str) -> Target:
        """The same target with another kernel set.

        Raises:
            InvalidInputError: Unknown set, or the DSP set for a CPU without the extension.
        """
        if kernels not in KERNEL_SETS:
            raise InvalidInputError(f"Unknown kernel set {kernels!r}; choose one of "
                                    f"{', '.join(KERNEL_SETS)}.", {"kernels": kernels})
        if kernels == "cortex-m-dsp" and not self.has("dsp"):
            raise InvalidInputError(
                f"The cortex-m-dsp kernels need a CPU with the DSP extension (Cortex-M4, "
                f"M7, M33, M55); {self.name} has none. Use kernels 'portable'.",
                {"kernels": kernels, "target": self.name})
        return self.model_copy(update={"kernels": kernels})


def _m(name: str, isa: str, features: tuple[str, ...], float_flags: tuple[str, ...],
       qemu: str | None) -> Target:
    return Target(name=name, isa=isa, cpu=name, features=features,
                  cflags=(f"-mcpu={name}", "-mthumb", *float_flags),
                  kernels="cortex-m-dsp" if "dsp" in features else "portable",
                  qemu_machine=qemu)


_SOFT = ("-mfloat-abi=soft",)
#: The built-in targets by name.
TARGETS: dict[str, Target] = {t.name: t for t in (
    Target(name="host", isa="host"),
    _m("cortex-m0plus", "armv6-m", (), _SOFT, None),
    _m("cortex-m3", "armv7-m", (), _SOFT, "mps2-an385"),
    _m("cortex-m4", "armv7e-m", ("dsp", "fpu"),
       ("-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), "mps2-an386"),
    _m("cortex-m7", "armv7e-m", ("dsp", "fpu"),
       ("-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"), "mps2-an500"),
    _m("cortex-m33", "armv8-m.main", ("dsp", "fpu"),
       ("-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"), None),
    _m("cortex-m55", "armv8.1-m.main", ("dsp", "fpu", "mve"), ("-mfloat-abi=hard",), None),
)}
DEFAULT_TARGET = "host"
_ALIASES = {"cortex-m0": "cortex-m0plus", "cortex-m0+": "cortex-m0plus",
            "cortex-m4f": "cortex-m4", "cortex-m7f": "cortex-m7"}
#: Catalog feature names of the kernel-relevant features.
_DEVICE_FEATURES = {"dsp": "dsp", "fpu": "fpu", "helium": "mve", "mve": "mve"}


def target_names() -> list[str]:
    """The built-in target names."""
    return list(TARGETS)


def target_for_device(device: Device) -> Target:
    """The target of a device profile: its Cortex-M with the features it lists.

    A Cortex-M device without ``fpu`` in its features gets soft-float flags, one without
    ``dsp`` the portable kernels (and ``+nodsp`` on an Armv8-M core). Other architectures
    (Cortex-A, x86-64, Xtensa) get the portable kernels and no cross flags: their C is
    built by the board's own compiler.
    """
    arch = device.arch.strip().lower()
    arch = _ALIASES.get(arch, arch)
    base = TARGETS.get(arch)
    if base is None or base.name == "host":
        return Target(name=arch, isa=arch, device=device.name)
    listed = {_DEVICE_FEATURES[f] for f in device.features if f in _DEVICE_FEATURES}
    features = tuple(sorted(set(base.features) & listed))
    cpu = base.cpu or arch
    cflags = list(base.cflags)
    if "dsp" in base.features and "dsp" not in features and base.isa.startswith("armv8"):
        cflags[0] = f"-mcpu={cpu}+nodsp"
    if "fpu" in base.features and "fpu" not in features:
        cflags = [f for f in cflags if not f.startswith(("-mfloat-abi", "-mfpu"))]
        cflags.append("-mfloat-abi=soft")
        if base.has("mve"):
            cflags[0] = cflags[0] + "+nofp"
    return base.model_copy(update={
        "features": features, "cflags": tuple(cflags), "device": device.name,
        "kernels": "cortex-m-dsp" if "dsp" in features else "portable"})


def get_target(spec: str | Target | Device | None = None, *,
               kernels: str | None = None) -> Target:
    """Resolve a target from a name, a catalog device (name or profile) or a target.

    Args:
        spec: ``None`` (the host), a target name (:data:`TARGETS`, or an alias such as
            ``cortex-m4f``), the name of a device of the catalog, a device profile, or a
            target.
        kernels: Another kernel set than the target's own (``portable`` or
            ``cortex-m-dsp``); ``None`` or ``"auto"`` keeps the target's.

    Returns:
        The target.

    Raises:
        InvalidInputError: The name is neither a target nor a catalog device, or the kernel
            set does not suit the CPU.
    """
    if spec is None:
        target = TARGETS[DEFAULT_TARGET]
    elif isinstance(spec, Target):
        target = spec
    elif isinstance(spec, Device):
        target = target_for_device(spec)
    else:
        name = spec.strip().lower()
        name = _ALIASES.get(name, name)
        if name in TARGETS:
            target = TARGETS[name]
        else:
            from tinymlaas.devices.catalog import device_names, get_device

            if spec not in device_names():
                raise InvalidInputError(
                    f"Unknown target {spec!r}. Give a target ({', '.join(TARGETS)}) or a "
                    "device of the catalog (tinymlaas devices list).",
                    {"target": spec, "targets": list(TARGETS)})
            target = target_for_device(get_device(spec))
    if kernels is not None and kernels != "auto" and kernels != target.kernels:
        target = target.with_kernels(kernels)
    return target


def startup_source() -> str:
    """The text of ``startup.c``, the QEMU MPS2 Cortex-M startup firmware links."""
    return resources.files("tinymlaas.compiler.targets").joinpath("startup.c") \
        .read_text("utf-8")
