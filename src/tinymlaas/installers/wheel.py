"""Build and read the wheels of ``package-python`` (PEP 427), with the standard library.

A wheel is a zip: an import package (``__init__.py`` with ``predict``, ``_cli.py``, the
model as ``model.onnx`` and its description as ``metadata.json``) and a
``<dist>-<version>.dist-info`` directory (METADATA, WHEEL, entry_points.txt, top_level.txt,
RECORD). Entries are sorted, timestamps fixed and permissions uniform, so the same model and
parameters always give the same bytes.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import keyword
import re
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from importlib import resources
from pathlib import Path, PurePosixPath
from string import Template
from typing import Any

from tinymlaas.domain import Device
from tinymlaas.errors import (
    InvalidInputError,
    StepFailedError,
    UnsafeInputError,
    UnsupportedModelError,
)

__all__ = ["BuiltWheel", "WheelInfo", "build_wheel", "check_distribution_name",
           "check_summary", "check_version", "default_name", "describe_model",
           "import_name", "normalize_name", "read_wheel", "render_template", "runtime_pins",
           "verify_wheel", "wheel_file_name"]

#: Zip timestamps of every entry (the earliest a zip can hold), for reproducible bytes.
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
#: What the wheel's package needs at run time; lower bounds known to work with it.
NUMPY_REQUIREMENT = "numpy>=1.24"
#: Bounds on a wheel we read back (package-docker's input): entries and unpacked bytes.
MAX_WHEEL_ENTRIES = 256
MAX_WHEEL_BYTES = 4 * 1024**3

_NAME = re.compile(r"[A-Za-z](?:[A-Za-z0-9._-]{0,62}[A-Za-z0-9])?")
# PEP 440 public versions in canonical form, with an optional local label.
_VERSION = re.compile(r"(?:[1-9][0-9]*!)?(?:0|[1-9][0-9]*)(?:\.(?:0|[1-9][0-9]*)){0,5}"
                      r"(?:(?:a|b|rc)(?:0|[1-9][0-9]*))?(?:\.post(?:0|[1-9][0-9]*))?"
                      r"(?:\.dev(?:0|[1-9][0-9]*))?(?:\+[a-z0-9]+(?:\.[a-z0-9]+)*)?")
_HEX_DIGEST = re.compile(r"[0-9a-f]{32,}")
# Import names a model package must not take: they would shadow what it runs on.
_RESERVED = frozenset({"numpy", "onnxruntime", "onnx", "pip", "setuptools", "wheel", "tinymlaas",
                       "pkg_resources", "site", "test"}) | frozenset(sys.stdlib_module_names)
_ORT_TYPES = {"float": "float32", "double": "float64", "float16": "float16", "int8": "int8",
              "uint8": "uint8", "int16": "int16", "uint16": "uint16", "int32": "int32",
              "uint32": "uint32", "int64": "int64", "uint64": "uint64", "bool": "bool"}
_QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul",
                        "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"})


# names and versions -------------------------------------------------------------------------

def normalize_name(name: str) -> str:
    """The PEP 503 normalized form: lower case, runs of ``-_.`` as one ``-``."""
    return re.sub(r"[-_.]+", "-", name).lower()


def import_name(name: str) -> str:
    """The import package of distribution ``name``: normalized, with underscores."""
    return normalize_name(name).replace("-", "_")


def check_distribution_name(name: str) -> str:
    """``name`` if it is a valid distribution name whose import package is usable.

    Raises:
        ValueError: With what to change (pydantic turns it into a validation error).
    """
    if not _NAME.fullmatch(name):
        raise ValueError("must be 1 to 64 characters: a letter first, then letters, digits, "
                         "'.', '_' or '-', ending with a letter or digit (e.g. 'digits-cnn')")
    package = import_name(name)
    if keyword.iskeyword(package) or package in _RESERVED:
        raise ValueError(f"the import package would be {package!r}, which is a Python keyword "
                         "or shadows a module the package needs; choose another name")
    return name


def check_version(version: str) -> str:
    """``version`` if it is a canonical PEP 440 version (``1.0.0``, ``2.1rc1``, ``0.3.post1``)."""
    if not _VERSION.fullmatch(version):
        raise ValueError("must be a PEP 440 version in canonical form, e.g. '0.1.0', "
                         "'1.0rc1', '2.0.post1' or '1.0+local.1'")
    return version


def check_summary(text: str) -> str:
    """``text`` if it fits one METADATA header line (printable, no line breaks)."""
    if not text.isprintable():
        raise ValueError("must be one line of printable characters")
    return text.strip()


def default_name(model_path: Path) -> str:
    """A distribution name from the model's file name, or ``model`` when it has none usable.

    Stored artifacts are named by their digest, which makes a poor name: those give ``model``.
    """
    stem = model_path.stem
    if _HEX_DIGEST.fullmatch(stem.lower()):
        return "model"
    try:
        return check_distribution_name(stem)
    except ValueError:
        return "model"


def wheel_file_name(name: str, version: str) -> str:
    """``<dist>-<version>-py3-none-any.whl`` with the name escaped as PEP 427 asks."""
    return f"{import_name(name)}-{version.replace('-', '_')}-py3-none-any.whl"


# the model ----------------------------------------------------------------------------------

def _tensor_specs(values: list[Any], role: str) -> list[dict[str, Any]]:
    specs = []
    for value in values:
        match = re.fullmatch(r"tensor\((\w+)\)", value.type)
        if match is None or match.group(1) not in _ORT_TYPES:
            raise UnsupportedModelError(
                f"{role} {value.name!r} has type {value.type}; the package handles numeric "
                "tensors only (export classifiers without ZipMap, e.g. skl2onnx "
                "options={'zipmap': False})")
        shape = [d if isinstance(d, int) else (d or f"d{i}") for i, d in enumerate(value.shape)]
        specs.append({"name": value.name, "shape": shape, "dtype": _ORT_TYPES[match.group(1)]})
    return specs


def describe_model(model_path: Path, device: Device | None = None) -> dict[str, Any]:
    """What is known about a model at package time: digest, size, parameters, tensors.

    The model is opened in ONNX Runtime, so a model it cannot run fails here, not on the
    user's machine.

    Raises:
        UnsupportedModelError: The model keeps weights in external files, has non-tensor
            inputs or outputs, or ONNX Runtime cannot load it.
    """
    import onnx
    import onnxruntime as ort

    from tinymlaas.evaluation.static import graph_stats

    data = model_path.read_bytes()
    try:
        model = onnx.load_from_string(data)
    except Exception as exc:
        raise InvalidInputError(f"the input is not an ONNX model ({exc}); give an .onnx "
                                "file") from None
    if any(init.data_location == onnx.TensorProto.EXTERNAL for init in model.graph.initializer):
        raise UnsupportedModelError("the model keeps weights in an external data file; save it "
                                    "as one file (onnx.save(..., save_as_external_data=False))")
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UnsupportedModelError(f"ONNX Runtime cannot load the model: {exc}") from None
    stats = graph_stats(model)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    info: dict[str, Any] = {
        "model": {"file": "model.onnx", "sha256": hashlib.sha256(data).hexdigest(),
                  "size_bytes": len(data), "parameters": stats.parameters,
                  "weight_bytes": stats.weight_bytes, "macs": stats.macs, "opset": opset,
                  "quantized": any(n.op_type in _QUANT_OPS for n in model.graph.node)},
        "inputs": _tensor_specs(session.get_inputs(), "input"),
        "outputs": _tensor_specs(session.get_outputs(), "output"),
        "runtime": {"onnxruntime": ort.__version__},
        "device": None}
    if device is not None:
        info["device"] = {"name": device.name, "title": device.title, "arch": device.arch,
                          "category": device.category}
    return info


def runtime_pins() -> dict[str, str]:
    """The versions of onnxruntime and numpy installed here, which the packages were checked
    with."""
    return {dist: importlib_metadata.version(dist) for dist in ("numpy", "onnxruntime")}


# templates ----------------------------------------------------------------------------------

def render_template(folder: str, file: str, /, **values: str) -> str:
    """``files/<folder>/<file>.tmpl`` with ``$placeholders`` filled (every one must be given)."""
    text = resources.files("tinymlaas.installers").joinpath(
        f"files/{folder}/{file}.tmpl").read_text("utf-8")
    return Template(text).substitute(values)


def _spec_text(spec: dict[str, Any]) -> str:
    return f"`{spec['name']}` {spec['dtype']} [{', '.join(str(d) for d in spec['shape'])}]"


def _description(info: dict[str, Any], script: str, package: str) -> str:
    """The METADATA body: what the package is, its numbers as a Markdown table, and usage."""
    model = info["model"]
    rows = [("Model SHA-256", f"`{model['sha256']}`"),
            ("Model size", f"{model['size_bytes']} bytes"),
            ("Parameters", str(model["parameters"])),
            ("Weight bytes", str(model["weight_bytes"])),
            ("MACs per sample", str(model["macs"])),
            ("Quantized", "yes" if model["quantized"] else "no"),
            ("ONNX opset", str(model["opset"])),
            ("Checked with ONNX Runtime", info["runtime"]["onnxruntime"])]
    rows += [(f"Input {i}", _spec_text(s)) for i, s in enumerate(info["inputs"])]
    rows += [(f"Output {i}", _spec_text(s)) for i, s in enumerate(info["outputs"])]
    if info["device"]:
        rows.append(("Target device", f"{info['device']['name']} ({info['device']['arch']})"))
    table = "\n".join(f"| {key} | {value} |" for key, value in rows)
    return render_template("python", "DESCRIPTION.md", name=info["name"],
                           version=info["version"], table=table, script=script,
                           package=package)


def _metadata_file(info: dict[str, Any], ort_version: str) -> str:
    major_minor = ".".join(ort_version.split(".")[:2])
    headers = [("Metadata-Version", "2.1"), ("Name", info["name"]),
               ("Version", info["version"]), ("Summary", info["summary"]),
               ("Requires-Python", ">=3.9"), ("Requires-Dist", NUMPY_REQUIREMENT),
               # The model was checked with this release; older ones may lack its operators.
               ("Requires-Dist", f"onnxruntime>={major_minor}"),
               ("Description-Content-Type", "text/markdown")]
    head = "".join(f"{key}: {value}\n" for key, value in headers)
    return head + "\n" + info["description"]


# building -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuiltWheel:
    """A wheel on disk, its digest, and the ``metadata.json`` it carries."""

    path: Path
    sha256: str
    metadata: dict[str, Any]


def _record_hash(data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
    return "sha256=" + digest.decode("ascii")


def _zip_entry(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = (0o100644 << 16)
    info.create_system = 3  # Unix, so the permissions above are honoured
    return info


def _write_zip(path: Path, files: dict[str, bytes], record_name: str) -> None:
    """Package files first, then dist-info, RECORD last (as PEP 427 recommends)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for name in files:
        writer.writerow([name, _record_hash(files[name]), len(files[name])])
    writer.writerow([record_name, "", ""])
    entries = {**files, record_name: out.getvalue().encode("utf-8")}
    tmp = path.with_name(path.name + ".part")
    with zipfile.ZipFile(tmp, "w") as archive:
        for name, data in entries.items():
            archive.writestr(_zip_entry(name), data, compresslevel=9)
    tmp.replace(path)


def build_wheel(model_path: Path, out_dir: Path, *, name: str, version: str, summary: str = "",
                device: Device | None = None) -> BuiltWheel:
    """Build ``<dist>-<version>-py3-none-any.whl`` in ``out_dir`` for the model at ``model_path``.

    Args:
        model_path: A single-file ONNX model.
        out_dir: Where the wheel goes (created if missing).
        name: Distribution name (checked with :func:`check_distribution_name`).
        version: PEP 440 version (checked with :func:`check_version`).
        summary: One-line summary; a default names the model's digest.
        device: The run's target device, recorded in the metadata.

    Raises:
        InvalidInputError: A bad name or version, or an input that is not an ONNX model.
        UnsupportedModelError: A model the package cannot serve (see :func:`describe_model`).
    """
    try:
        check_distribution_name(name)
        check_version(version)
        summary = check_summary(summary)
    except ValueError as exc:
        raise InvalidInputError(f"cannot package {name!r} {version!r}: {exc}") from None
    dist, package = normalize_name(name), import_name(name)
    info = describe_model(model_path, device)
    ort_version = info["runtime"]["onnxruntime"]
    info = {"name": dist, "version": version, "package": package,
            "summary": summary or f"ONNX model {info['model']['sha256'][:12]} with ONNX Runtime",
            **info, "packager": "tinymlaas package-python 1"}
    info["description"] = _description(info, dist, package)
    public = {k: v for k, v in info.items() if k != "description"}
    values = {"name": dist, "version": version, "package": package}
    files = {
        f"{package}/__init__.py": render_template("python", "__init__.py", **values).encode(),
        f"{package}/__main__.py": render_template("python", "__main__.py", **values).encode(),
        f"{package}/_cli.py": render_template("python", "_cli.py", **values).encode(),
        f"{package}/metadata.json": (json.dumps(public, indent=2, sort_keys=True)
                                     + "\n").encode(),
        f"{package}/model.onnx": model_path.read_bytes(),
        f"{package}/py.typed": b""}
    dist_info = f"{package}-{version.replace('-', '_')}.dist-info"
    files |= {
        f"{dist_info}/METADATA": _metadata_file(info, ort_version).encode("utf-8"),
        f"{dist_info}/WHEEL": (b"Wheel-Version: 1.0\nGenerator: tinymlaas package-python 1\n"
                               b"Root-Is-Purelib: true\nTag: py3-none-any\n"),
        f"{dist_info}/entry_points.txt": f"[console_scripts]\n{dist} = {package}._cli:main\n"
                                         .encode(),
        f"{dist_info}/top_level.txt": f"{package}\n".encode()}
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / wheel_file_name(name, version)
    _write_zip(path, dict(sorted(files.items(), key=lambda kv: (".dist-info/" in kv[0], kv[0]))),
               f"{dist_info}/RECORD")
    return BuiltWheel(path, hashlib.sha256(path.read_bytes()).hexdigest(), public)


# reading ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class WheelInfo:
    """A wheel made by :func:`build_wheel`, read back and checked against its RECORD."""

    name: str
    version: str
    package: str
    file_name: str
    metadata: dict[str, Any]
    requires: list[str]


def _headers(text: str) -> list[tuple[str, str]]:
    head = text.split("\n\n", 1)[0]
    return [(k.strip(), v.strip()) for k, _, v in
            (line.partition(":") for line in head.splitlines() if ":" in line)]


def _check_entries(archive: zipfile.ZipFile) -> None:
    infos = archive.infolist()
    if len(infos) > MAX_WHEEL_ENTRIES:
        raise UnsafeInputError(f"the wheel has {len(infos)} entries, more than "
                               f"{MAX_WHEEL_ENTRIES}; give a wheel made by package-python")
    if sum(i.file_size for i in infos) > MAX_WHEEL_BYTES:
        raise UnsafeInputError("the wheel unpacks to more than 4 GiB")
    for info in infos:
        parts = PurePosixPath(info.filename).parts
        if info.filename.startswith("/") or ".." in parts or "\\" in info.filename:
            raise UnsafeInputError(f"the wheel holds an unsafe path {info.filename!r}")


def _check_record(archive: zipfile.ZipFile, record_name: str) -> None:
    rows = list(csv.reader(io.StringIO(archive.read(record_name).decode("utf-8"))))
    listed = {row[0] for row in rows if row}
    names = {i.filename for i in archive.infolist() if not i.is_dir()}
    if listed != names:
        raise InvalidInputError("the wheel's RECORD does not list exactly its files; "
                                "rebuild it with package-python")
    for row in rows:
        if len(row) != 3 or row[0] == record_name:
            continue
        data = archive.read(row[0])
        if row[1] != _record_hash(data) or row[2] != str(len(data)):
            raise InvalidInputError(f"{row[0]} in the wheel does not match its RECORD hash; "
                                    "the wheel is damaged, rebuild it")


def read_wheel(path: Path) -> WheelInfo:
    """Read and check a wheel made by ``package-python`` (hostile input: bounded, verified).

    Raises:
        UnsafeInputError: Too many entries, too large, or paths leaving the wheel.
        InvalidInputError: Not a zip, not made by package-python, or damaged.
    """
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InvalidInputError(f"the input is not a wheel ({exc})") from None
    with archive:
        _check_entries(archive)
        records = [n for n in archive.namelist()
                   if re.fullmatch(r"[^/]+\.dist-info/RECORD", n)]
        if len(records) != 1:
            raise InvalidInputError("the input is not a wheel (no single .dist-info/RECORD)")
        dist_info = records[0].split("/")[0]
        _check_record(archive, records[0])
        headers = _headers(archive.read(f"{dist_info}/METADATA").decode("utf-8"))
        fields = dict(headers)
        try:
            name = check_distribution_name(fields.get("Name", ""))
            version = check_version(fields.get("Version", ""))
        except ValueError as exc:
            raise InvalidInputError(f"the wheel's METADATA has a bad name or version: "
                                    f"{exc}") from None
        package = import_name(name)
        if f"{package}/metadata.json" not in archive.namelist() or \
                f"{package}/model.onnx" not in archive.namelist():
            raise InvalidInputError(f"the wheel has no {package}/model.onnx and metadata.json; "
                                    "give a wheel made by package-python")
        metadata = json.loads(archive.read(f"{package}/metadata.json"))
        model_sha = hashlib.sha256(archive.read(f"{package}/model.onnx")).hexdigest()
        if not isinstance(metadata, dict) or \
                metadata.get("model", {}).get("sha256") != model_sha:
            raise InvalidInputError("the wheel's metadata.json does not describe its "
                                    "model.onnx; give a wheel made by package-python")
    return WheelInfo(name=name, version=version, package=package,
                     file_name=wheel_file_name(name, version), metadata=metadata,
                     requires=[v for k, v in headers if k == "Requires-Dist"])


def verify_wheel(wheel: Path, model_path: Path, work_dir: Path) -> float:
    """Import the wheel's package in a fresh interpreter and compare its ``predict`` with
    ONNX Runtime on the model, on a seeded random input; the largest absolute difference.

    Raises:
        StepFailedError: The package does not import or its outputs differ.
    """
    work_dir, wheel, model_path = work_dir.resolve(), wheel.resolve(), model_path.resolve()
    work_dir.mkdir(parents=True, exist_ok=True)
    (work_dir / "verify.py").write_text(render_template("python", "verify.py"), "utf-8")
    package = read_wheel(wheel).package
    # -I: isolated from the caller's PYTHONPATH and user site; the wheel itself is on sys.path.
    done = subprocess.run([sys.executable, "-I", str(work_dir / "verify.py"), str(wheel),
                           str(model_path), package],
                          capture_output=True, text=True, cwd=work_dir, check=False,
                          timeout=600)
    if done.returncode != 0:
        raise StepFailedError("the built wheel failed its check: "
                              + (done.stderr.strip().splitlines() or ["no output"])[-1])
    difference = float(json.loads(done.stdout)["max_abs_diff"])
    if difference != 0.0:
        raise StepFailedError(f"the built wheel's predict differs from ONNX Runtime by "
                              f"{difference}; report this with the model")
    return difference
