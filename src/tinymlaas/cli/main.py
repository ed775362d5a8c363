"""``tinymlaas``: register models, datasets and devices; run, compare and export pipelines."""

from __future__ import annotations

import logging
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from tinymlaas import __version__
from tinymlaas.cli.render import (
    RunProgress,
    console,
    err_console,
    fmt,
    human_bytes,
    human_kib,
    human_mib,
    print_json,
    quality_cells,
    status,
    table,
)
from tinymlaas.domain import DatasetSplits, Device, Run, Task
from tinymlaas.errors import ConflictError, InvalidInputError, TinymlaasError

if TYPE_CHECKING:
    from tinymlaas.service.compare import ComparisonRow
    from tinymlaas.service.protocol import ServicesProtocol

app = typer.Typer(name="tinymlaas", no_args_is_help=True, add_completion=False,
                  help="Compress, compile and compare ML models for a target device.",
                  pretty_exceptions_enable=False)
models_app = typer.Typer(no_args_is_help=True, help="Register and inspect models.")
datasets_app = typer.Typer(no_args_is_help=True, help="Register and inspect datasets.")
devices_app = typer.Typer(no_args_is_help=True, help="The device catalog and custom devices.")
transformers_app = typer.Typer(no_args_is_help=True, help="The pipeline steps available.")
runs_app = typer.Typer(no_args_is_help=True, help="Inspect, rerun and cancel runs.")
users_app = typer.Typer(no_args_is_help=True, help="Server accounts and the admin role "
                        "(run on the server, against its database).")
app.add_typer(models_app, name="models")
app.add_typer(datasets_app, name="datasets")
app.add_typer(devices_app, name="devices")
app.add_typer(transformers_app, name="transformers")
app.add_typer(runs_app, name="runs")
app.add_typer(users_app, name="users")
projects_app = typer.Typer(no_args_is_help=True, help="List and delete projects.")
app.add_typer(projects_app, name="projects")
keys_app = typer.Typer(no_args_is_help=True, help="The project's firmware signing key "
                       "(sign-image).")
app.add_typer(keys_app, name="keys")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProjectOpt = Annotated[str | None, typer.Option("--project", "-p", help="Project id.")]


def _server_client() -> Any:
    """The SDK client of ``--server``, or None without one."""
    from tinymlaas.config import get_settings

    settings = get_settings()
    if not settings.server_url:
        return None
    from tinymlaas.cli.remote import RemoteServices

    return RemoteServices(settings.server_url, settings.token).client


def services() -> ServicesProtocol:
    """The local service facade, or a client of the server in ``--server``/``TINYMLAAS_SERVER``
    (both implement :class:`~tinymlaas.service.protocol.ServicesProtocol`)."""
    from tinymlaas.config import get_settings

    settings = get_settings()
    if settings.server_url:
        from tinymlaas.cli.remote import RemoteServices

        return RemoteServices(settings.server_url, settings.token)
    from tinymlaas.service import Services

    log_steps_to_file(settings.home)
    return Services()


#: Where the CLI, which is its own server when it works locally, logs what a server would.
STEPS_LOG = Path("logs") / "steps.log"


def log_steps_to_file(home: Path) -> Path:
    """Send the step log (the traceback of a step that failed unexpectedly, under its
    reference) to ``<home>/logs/steps.log`` instead of the terminal, which shows the step's
    one-line error and that reference."""
    import logging

    path = (home / STEPS_LOG).resolve()
    logger = logging.getLogger("tinymlaas.steps")
    for handler in list(logger.handlers):
        if getattr(handler, "_tinymlaas_cli", False):
            if Path(getattr(handler, "baseFilename", "")) == path:
                return path
            logger.removeHandler(handler)
            handler.close()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError:  # a home we cannot write: the service says so on its own terms
        return path
    handler = logging.FileHandler(path, encoding="utf-8", delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler._tinymlaas_cli = True  # type: ignore[attr-defined]
    logger.addHandler(handler)  # with a handler, Python no longer prints to stderr
    return path


def _version(value: bool) -> None:
    if value:
        console.print(f"tinymlaas {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    home: Annotated[Path | None, typer.Option(help="Data directory (default: "
                                              "$TINYMLAAS_HOME or ~/.local/share/tinymlaas).")]
    = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Show the version.")] = False,
    server: Annotated[str | None, typer.Option(help="Work against this tinymlaas server "
                                               "(default: $TINYMLAAS_SERVER).")] = None,
    token: Annotated[str | None, typer.Option(help="API token for --server (default: "
                                              "$TINYMLAAS_TOKEN).")] = None,
) -> None:
    overrides = {"TINYMLAAS_HOME": str(home) if home is not None else None,
                 "TINYMLAAS_SERVER": server, "TINYMLAAS_TOKEN": token}
    if any(value is not None for value in overrides.values()):
        for key, value in overrides.items():
            if value is not None:
                os.environ[key] = value
        from tinymlaas.config import get_settings

        get_settings.cache_clear()


def _parse_ints(text: str | None, sep: str = ",") -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.replace("x", sep).split(sep) if v.strip()]
    except ValueError:
        raise InvalidInputError(f"expected integers separated by '{sep}', got {text!r}") from None


# models ------------------------------------------------------------------------------------

@models_app.command("add")
def models_add(
    path: Annotated[str, typer.Argument(help="ONNX, torch.export (.pt2) or TorchScript file; "
                                        "a Hugging Face model folder or cache folder; or "
                                        "hf:ORG/NAME from the Hub.")],
    name: Annotated[str | None, typer.Option(help="Name (default: the file name).")] = None,
    task: Annotated[Task | None, typer.Option(
        help="What the model does (default: classification; for Hugging Face models, from "
        "the architecture).")] = None,
    input_shape: Annotated[str | None, typer.Option(
        help="Input shape without batch, e.g. 1,8,8 (needed for TorchScript).")] = None,
    revision: Annotated[str | None, typer.Option(
        help="Hugging Face branch, tag or commit (hf:ORG/NAME and cache folders).")] = None,
    description: str = "",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate and register a model file, or import a Hugging Face model to ONNX.

    A Hugging Face model (hf:ORG/NAME, or a folder with config.json, safetensors weights and
    tokenizer files) is exported to ONNX with its tokenizer kept inside; HF_HUB_OFFLINE=1
    uses only the local cache. An unreachable Hub exits with code 7.
    """
    if path.startswith("hf:") or Path(path).is_dir():
        if input_shape is not None:
            raise InvalidInputError("--input-shape is for TorchScript files; a Hugging Face "
                                    "model takes token ids of any length")
        model = services().add_hf_model(path, name, revision=revision, task=task,
                                        project=project or "default", description=description)
    else:
        if revision is not None:
            raise InvalidInputError("--revision is for hf:ORG/NAME and Hugging Face cache "
                                    "folders")
        model = services().add_model(Path(path), name, task=task or Task.classification,
                                     project=project or "default",
                                     input_shape=_parse_ints(input_shape),
                                     description=description)
    if as_json:
        print_json(model)
    else:
        console.print(f"registered model [bold]{model.name}[/] ({model.id}): {model.kind}, "
                      f"{model.parameters:,} parameters, task {model.task}", highlight=False)
        console.print(f"  inputs: {_tensors(model.inputs)}", markup=False, highlight=False)
        console.print(f"  outputs: {_tensors(model.outputs)}", markup=False, highlight=False)
        from tinymlaas.templates import default_template

        console.print(f"next: tinymlaas run {default_template(str(model.kind))} --model "
                      f"{model.name} --dataset DATASET   (the default int8; `tinymlaas "
                      "datasets add` registers the data)", markup=False, highlight=False)


def _tensors(specs: list[Any]) -> str:
    """``name dtype (dims)`` of each tensor, dynamic dimensions by name."""
    return ", ".join(f"{t.name} {t.dtype} ({', '.join(str(d) for d in t.shape)})"
                     for t in specs) or "?"


@models_app.command("list")
def models_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List registered models."""
    items = services().list_models(project)
    if as_json:
        return print_json(items)
    if not items:
        console.print("no models yet: `tinymlaas models add FILE`")
        return
    console.print(table("Models", ["id", "name", "kind", "task", "parameters", "input", "project"],
                        [[m.id, m.name, m.kind, m.task, f"{m.parameters:,}",
                          _tensors(m.inputs), m.project] for m in items]))


@models_app.command("show")
def models_show(ref: str, as_json: JsonOpt = False) -> None:
    """Show one model (by id or name)."""
    model = services().get_model(ref)
    if as_json:
        return print_json(model)
    console.print(table(f"Model {model.name}", ["field", "value"], [
        ["id", model.id], ["kind", model.kind], ["task", model.task],
        ["parameters", f"{model.parameters:,}"], ["artifact", model.artifact_sha],
        ["inputs", _tensors(model.inputs)], ["outputs", _tensors(model.outputs)],
        ["project", model.project], ["created", model.created_at]]))


# datasets ----------------------------------------------------------------------------------

@datasets_app.command("add")
def datasets_add(
    source: Annotated[str, typer.Argument(help="An .npz (X, y), a .csv, a .zip of image "
                                          "folders, a built-in name (digits), or "
                                          "site://NAME/path: a file that stays at a site.")],
    name: Annotated[str | None, typer.Option(help="Name (default: file stem).")] = None,
    task: Annotated[Task | None, typer.Option(help="Default: inferred from the labels.")] = None,
    label_column: Annotated[str | None, typer.Option(help="CSV label column (default: "
                                                     "the last).")] = None,
    image_size: Annotated[str | None, typer.Option(help="Resize images to WxH, e.g. "
                                                   "32x32.")] = None,
    test_fraction: Annotated[float, typer.Option(help="Share of samples held out for "
                                                 "testing.")] = 0.2,
    calibration_size: Annotated[int, typer.Option(help="Calibration samples (from the "
                                                  "train split).")] = 256,
    seed: Annotated[int, typer.Option(help="Seed of the split permutation.")] = 0,
    tokenizer: Annotated[str | None, typer.Option(
        help="Text data (.csv, .jsonl): tokenize with the tokenizer of this registered model "
        "(one imported from Hugging Face); one array per model input.")] = None,
    text_column: Annotated[str, typer.Option(help="Text data: the column of text.")] = "text",
    text_pair_column: Annotated[str | None, typer.Option(
        help="Text data: a second text per row (sentence pairs).")] = None,
    max_length: Annotated[int, typer.Option(help="Text data: tokens per sample (longer "
                                            "texts are truncated).")] = 128,
    padding: Annotated[str, typer.Option(help="Text data: max_length (pad every sample to "
                                         "--max-length) or longest (to the longest "
                                         "sample).")] = "max_length",
    project: ProjectOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Validate and register a dataset.

    Text (a .csv or .jsonl with a text column) is tokenized with a model's tokenizer:
    --tokenizer MODEL; without --label-column it is unlabelled (for calibration and
    fidelity).

    site://NAME/path (with --server) names a file under the data root of site NAME's
    workers: a worker there reads it and reports its shape, classes and sha256, and its
    bytes never leave the site. Runs on it run at that site.
    """
    text = None
    if tokenizer is not None and source.startswith("site://"):
        raise InvalidInputError("--tokenizer is for text uploaded here; at a site, tokenize "
                                "the text into an NPZ (one array per model input) and register "
                                "that")
    if tokenizer is not None:
        from tinymlaas.formats.text_datasets import TextOptions

        text = TextOptions(tokenizer=tokenizer, text_column=text_column,
                           text_pair_column=text_pair_column, max_length=max_length,
                           padding=padding)  # type: ignore[arg-type]
    elif text_pair_column is not None:
        raise InvalidInputError("--text-pair-column is for text data: give --tokenizer MODEL")
    size = _parse_ints(image_size)
    if size is not None and len(size) != 2:
        raise InvalidInputError("--image-size takes WxH, e.g. 32x32")
    try:
        splits = DatasetSplits(test_fraction=test_fraction, calibration_size=calibration_size,
                               seed=seed)
    except ValueError as exc:
        raise InvalidInputError(str(exc).splitlines()[-2].strip()) from None
    dataset = services().add_dataset(source, name, task=task, label_column=label_column,
                                     image_size=(size[0], size[1]) if size else None,
                                     splits=splits, project=project or "default",
                                     **({"text": text} if text is not None else {}))
    if as_json:
        return print_json(dataset)
    shape = "tokenized text" if dataset.source_format == "text" else \
        f"shape {dataset.feature_shape}"
    console.print(f"registered dataset [bold]{dataset.name}[/] ({dataset.id}): "
                  f"{dataset.num_samples} samples of {shape}, "
                  f"task {dataset.task}" + (f", {dataset.num_classes} classes"
                                            if dataset.num_classes else "")
                  + (f"; it stays at {dataset.location}" if dataset.site else ""))


@datasets_app.command("list")
def datasets_list(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """List registered datasets."""
    items = services().list_datasets(project)
    if as_json:
        return print_json(items)
    if not items:
        console.print("no datasets yet: `tinymlaas datasets add digits`")
        return
    console.print(table("Datasets", ["id", "name", "format", "task", "samples", "shape",
                                     "classes", "project", "location"],
                        [[d.id, d.name, d.source_format, d.task, d.num_samples, d.feature_shape,
                          d.num_classes or "-", d.project, d.location] for d in items]))


@datasets_app.command("show")
def datasets_show(ref: str, as_json: JsonOpt = False) -> None:
    """Show one dataset (by id or name)."""
    d = services().get_dataset(ref)
    if as_json:
        return print_json(d)
    console.print(table(f"Dataset {d.name}", ["field", "value"], [
        ["id", d.id], ["format", d.source_format], ["task", d.task],
        ["samples", d.num_samples], ["feature shape", d.feature_shape],
        ["classes", ", ".join(d.class_names) or "-"],
        ["splits", f"test {d.splits.test_fraction:.0%}, calibration "
                   f"{d.splits.calibration_size}, seed {d.splits.seed}"],
        ["artifact", d.artifact_sha], ["location", d.location], ["created", d.created_at]]))


# devices -----------------------------------------------------------------------------------

@devices_app.command("list")
def devices_list(as_json: JsonOpt = False) -> None:
    """List the device catalog and custom devices."""
    items = services().list_devices()
    if as_json:
        return print_json(items)
    console.print(table("Devices", ["name", "title", "arch", "MHz", "RAM", "flash", "features",
                                    "custom"],
                        [[d.name, d.title, d.arch, f"{d.clock_mhz:g}",
                          human_kib(d.ram_kb), human_kib(d.flash_kb),
                          ",".join(d.features), "yes" if d.custom else ""] for d in items]))


@devices_app.command("show")
def devices_show(name: str, as_json: JsonOpt = False) -> None:
    """Show one device."""
    device = services().get_device(name)
    if as_json:
        return print_json(device)
    console.print(table(f"Device {device.name}", ["field", "value"],
                        [[k, _device_value(k, v)] for k, v in device.model_dump().items()]))


def _device_value(field: str, value: object) -> object:
    """RAM and flash (``ram_kb``, ``flash_kb``: KiB) in binary units."""
    return human_kib(value) if field.endswith("_kb") and isinstance(value, int | float) else value


@devices_app.command("add")
def devices_add(
    name: str,
    arch: Annotated[str, typer.Option(help="e.g. cortex-m4, cortex-a53, x86-64.")],
    clock_mhz: Annotated[float, typer.Option(help="CPU clock in MHz.")],
    ram_kb: Annotated[int, typer.Option(help="RAM in KiB.")],
    flash_kb: Annotated[int, typer.Option(help="Flash (or storage for models) in KiB.")],
    title: str = "",
    category: Annotated[str, typer.Option(help="mcu, sbc, edge-gpu, server or phone.")] = "mcu",
    features: Annotated[str, typer.Option(help="Comma-separated: fpu,dsp,helium,neon.")] = "",
    runtimes: Annotated[str, typer.Option(help="Comma-separated: c,tflite-micro.")] = "c",
    macs_per_cycle: Annotated[float, typer.Option(help="MACs per cycle, for estimates.")] = 0.5,
    project: ProjectOpt = None,
) -> None:
    """Register a custom device in a project."""
    from pydantic import ValidationError

    try:
        device = Device(name=name, title=title, category=category, arch=arch,  # type: ignore[arg-type]
                        clock_mhz=clock_mhz, ram_kb=ram_kb, flash_kb=flash_kb,
                        features=[f for f in features.split(",") if f],
                        runtimes=[r for r in runtimes.split(",") if r],
                        macs_per_cycle=macs_per_cycle, custom=True, project=project)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidInputError(f"invalid device: {problems}") from None
    services().add_device(device)
    console.print(f"registered device [bold]{device.name}[/]")


# transformers ------------------------------------------------------------------------------

@transformers_app.command("list")
def transformers_list(as_json: JsonOpt = False) -> None:
    """List the transformers (built-in and installed plug-ins; with --server, the server's,
    with the external ones registered in your projects)."""
    client = _server_client()
    if client is not None:
        rows = [{"name": t.name, "version": t.version, "accepts": sorted(t.accepts),
                 "produces": t.produces, "needs": t.needs, "summary": t.summary}
                for t in client.list_transformers()]
    else:
        from tinymlaas.transformers import list_transformers

        rows = [{"name": t.name, "version": t.version, "accepts": sorted(t.accepts),
                 "produces": t.produces.value, "needs": t.needs, "summary": t.summary}
                for t in list_transformers()]
    if as_json:
        return print_json(rows)
    console.print(table("Transformers", ["name", "version", "accepts", "produces", "needs",
                                         "summary"],
                        [[r["name"], r["version"], ",".join(r["accepts"]), r["produces"],
                          r["needs"], r["summary"]] for r in rows]))


@transformers_app.command("show")
def transformers_show(name: str, as_json: JsonOpt = False) -> None:
    """Show a transformer's parameters (their JSON schema)."""
    client = _server_client()
    if client is not None:
        info = client.get_transformer(name)
        schema, summary = info.params_schema, (info.name, info.version, info.summary)
        accepts, produces, needs = info.accepts, info.produces, info.needs
    else:
        from tinymlaas.transformers.registry import get_transformer

        t = get_transformer(name)
        schema, summary = t.Params.model_json_schema(), (t.name, t.version, t.summary)
        accepts, produces, needs = list(t.accepts), t.produces.value, t.needs
    if as_json:
        return print_json(schema)
    console.print(f"[bold]{summary[0]}[/] v{summary[1]}: {summary[2]}")
    console.print(f"accepts {', '.join(sorted(accepts))}; produces {produces}; "
                  f"needs data: {needs}")
    rows = []
    for field, spec in schema.get("properties", {}).items():
        kind = spec.get("type") or " | ".join(
            str(a.get("type", a.get("$ref", "?")).split("/")[-1]) for a in spec.get("anyOf", []))
        if "enum" in spec:
            kind = " | ".join(map(str, spec["enum"]))
        elif "$ref" in spec:
            ref = schema.get("$defs", {}).get(spec["$ref"].split("/")[-1], {})
            kind = " | ".join(map(str, ref.get("enum", []))) or spec["$ref"].split("/")[-1]
        rows.append([field, kind, spec.get("default", "(required)"),
                     spec.get("description", "")])
    console.print(table("Parameters", ["name", "type", "default", "description"], rows)
                  if rows else "no parameters")


# runs --------------------------------------------------------------------------------------

def run_labels(run: Run) -> dict[int | str, str]:
    """The progress bar labels of a run's steps and evaluations."""
    labels: dict[int | str, str] = {s.index: f"{s.index + 1}. {s.transformer}" for s in run.steps}
    if run.pipeline.evaluate:
        labels["evaluate-baseline"] = "evaluate baseline"
        labels["evaluate"] = "evaluate output"
    return labels


def show_run_summary(run: Run) -> None:
    """Print a run's status, its metrics against the input model and the device fit."""
    colour = "green" if run.status == "succeeded" else "bold red" if run.status == "degraded" \
        else "red"
    console.print(f"run [bold]{run.name}[/] ({run.id}): [{colour}]{run.status}[/]"
                  + (f": {run.error}" if run.error else ""))
    if run.result:
        base, res = run.baseline, run.result
        console.print(table("Result vs baseline (the float32 input model in the output's "
                            "runtime)", ["metric", "baseline", "output"], [
            [k, _metric(k, base.get(k)), _metric(k, res.get(k))]
            for k in _METRICS if k in res or k in base]))
        fit = res.get("fit")
        if fit:
            from tinymlaas.devices import verdict_label

            verdict = _verdict(verdict_label(fit))
            console.print(
                f"device {fit['device']}: {verdict}; flash {human_bytes(fit['flash_needed_bytes'])}"
                f" of {human_bytes(fit['flash_available_bytes'])} "
                f"({fit['flash_margin_pct']:.0f}% free), RAM {human_bytes(fit['ram_needed_bytes'])}"
                f" of {human_bytes(fit['ram_available_bytes'])} ({fit['ram_margin_pct']:.0f}% "
                f"free), latency ~{fit['latency_ms_estimate']:.3g} ms (estimate)")
            for reason in fit["reasons"]:
                console.print(f"  - {reason}")


_METRICS = ["runtime", "accuracy", "mae", "rmse", "auc", "cosine_mean", "cosine_p5",
            "cosine_min", "snr_db", "max_abs_error", "top1_agreement", "file_bytes",
            "parameters", "weight_bytes", "arena_bytes", "macs", "latency_ms_p50",
            "latency_ms_p95", "peak_memory_mb"]


def _metric(key: str, value: object) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        if key.endswith("_bytes"):
            return human_bytes(value)
        if key == "peak_memory_mb":
            return human_mib(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


@app.command("run")
def run_pipeline(
    pipeline_file: Annotated[Path, typer.Argument(
        metavar="PIPELINE", help="Pipeline YAML (see docs/pipelines.md), or the name of a "
        "shipped template (auto-int8, static-int8, ...).")],
    model: Annotated[str | None, typer.Option(help="Model name or id (overrides the file).")]
    = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name or id.")] = None,
    device: Annotated[str | None, typer.Option(help="Target device name.")] = None,
    name: Annotated[str | None, typer.Option(help="Run name (default: the pipeline's).")] = None,
    project: ProjectOpt = None,
    site: Annotated[str | None, typer.Option(help="Run the steps on this site's workers "
                                             "(a server with a broker; see docs/sites.md). "
                                             "A run on a site's dataset runs at that site "
                                             "without it.")]
    = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a pipeline with live per-step progress; exits non-zero when it fails."""
    from tinymlaas.service.pipelines import load_pipeline

    svc = services()
    pipeline = load_pipeline(_pipeline_source(pipeline_file))
    run = svc.create_run(pipeline, model=model, dataset=dataset, device=device, name=name,
                         project=project, site=site)
    _execute(svc, run, as_json)


def _pipeline_source(given: Path) -> Path:
    """A pipeline file, or the file of the shipped template named ``given``."""
    from tinymlaas.templates import template_names, template_path

    if given.exists() or given.suffix or len(given.parts) > 1:
        return given
    names = template_names()
    if str(given) in names:
        return template_path(str(given))
    raise InvalidInputError(f"{given} is neither a pipeline file nor a template; templates: "
                            f"{', '.join(names)}")


#: ``run`` and ``runs rerun``: the exit code of a run that ended degraded (every step
#: succeeded, the output missed the fidelity gate).
EXIT_DEGRADED = 8


def _execute(svc, run: Run, as_json: bool) -> None:
    """Execute a created run with live progress, show the outcome; exit 6 if it failed, 8
    if it ended degraded."""
    if not as_json:
        console.print(f"run [bold]{run.name}[/] ({run.id}): {len(run.steps)} step(s)")
    with RunProgress(run_labels(run)) as progress:
        run = svc.execute_run(run.id, None if as_json else progress)
    if as_json:
        print_json(run)
    else:
        show_run_summary(run)
    if run.status == "degraded":
        raise typer.Exit(EXIT_DEGRADED)
    if run.status != "succeeded":
        raise typer.Exit(6)


@runs_app.command("list")
def runs_list(project: ProjectOpt = None,
              status_filter: Annotated[str | None, typer.Option("--status")] = None,
              as_json: JsonOpt = False) -> None:
    """List runs, newest first."""
    items = services().list_runs(project, status_filter)
    if as_json:
        return print_json(items)
    if not items:
        console.print("no runs yet: `tinymlaas run examples/static-int8.yaml`")
        return
    console.print(table("Runs", ["id", "name", "status", "steps", "quality", "size", "p50 ms",
                                 "created"],
                        [[r.id, r.name, status(r.status), " → ".join(s.transformer
                                                                    for s in r.steps) or "-",
                          quality_cells(r.baseline, r.result)[0],
                          human_bytes(r.result.get("file_bytes")),
                          fmt(r.result.get("latency_ms_p50"), ".3f"),
                          r.created_at.strftime("%Y-%m-%d %H:%M")] for r in items]))


@runs_app.command("show")
def runs_show(ref: str, log: Annotated[bool, typer.Option(help="Print step logs.")] = False,
              as_json: JsonOpt = False) -> None:
    """Show a run: steps with status, timing and errors, and its metrics."""
    run = services().get_run(ref)
    if as_json:
        return print_json(run)
    console.print(table(f"Run {run.name} ({run.id})", ["#", "transformer", "status", "time",
                                                        "output", "message"],
                        [[s.index + 1, s.transformer, status(s.status),
                          fmt(s.duration_s, ".2f", " s"),
                          (s.output_sha or "-")[:12], s.error or s.message]
                         for s in run.steps]))
    if log:
        for s in run.steps:
            console.rule(f"step {s.index + 1}: {s.transformer}")
            console.print(s.log or "(no log)", markup=False, highlight=False)
    show_run_summary(run)


@runs_app.command("layers")
def runs_layers(ref: str, as_json: JsonOpt = False) -> None:
    """The per-layer profile of a run's compiled model (its ONNX output, or what its compile-c
    step compiled): each kernel call's nodes, MACs, output shape, live arena and flash bytes."""
    svc = services()
    rows = svc.run_layers(svc.get_run(ref))
    if rows is None:
        raise ConflictError(f"run {ref} has no per-layer profile: it has no output yet, or "
                            "its output is neither ONNX nor generated C, or the compiler "
                            "cannot lower its model")
    if as_json:
        return print_json(rows)
    _print_layers(rows)


@runs_app.command("rerun")
def runs_rerun(ref: str, as_json: JsonOpt = False) -> None:
    """Run a run's pipeline again; finished steps come from the cache."""
    svc = services()
    _execute(svc, svc.rerun(ref), as_json)


@runs_app.command("cancel")
def runs_cancel(ref: Annotated[str, typer.Argument(help="Run id or name.")],
                as_json: JsonOpt = False) -> None:
    """Stop a queued or running run. With --server the server stops it (its running step's
    process is killed); locally only a run that no process is executing can be cancelled."""
    svc = services()
    run = svc.cancel_run(ref)
    if as_json:
        return print_json(run)
    if run.status.value == "cancelled":
        console.print(f"run [bold]{run.name}[/] ({run.id}): cancelled")
    else:
        console.print(f"run [bold]{run.name}[/] ({run.id}): cancelling (it is "
                      f"{run.status.value}; its current step is being stopped)")


@app.command("compare")
def compare(
    runs: Annotated[list[str], typer.Argument(help="Run ids or names.")],
    reference: Annotated[str | None, typer.Option(
        help="Compare against this run's output (default: each run's input model).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Compare runs: accuracy and size; host latency and process RAM per runtime (ratios
    only within one runtime); the device verdict (fits, does not fit, unsupported ops)."""
    rows = services().compare(runs, reference)
    if as_json:
        return print_json(rows)
    show_comparison(rows)


def show_comparison(rows: list[ComparisonRow]) -> None:
    """The comparison as three tables (model, host, device) and the notes on missing ratios."""
    ref = rows[0].reference if rows else "float32 input model"
    for warning in dict.fromkeys(w for r in rows for w in r.warnings):
        console.print(f"[yellow]warning: {warning}[/]", highlight=False)
    console.print(table(
        f"Comparison (ratios: reference / run, so 4.0x = 4 times smaller or faster; "
        f"reference: {ref}, measured in each run's runtime)",
        ["run", "steps", "status", "quality", "Δ", "agree", "size", "size ×", "MACs"],
        [[r.name, " → ".join(r.steps) or "(none)", status(r.status),
          _quality_text(r), _quality_change(r),
          fmt(r.top1_agreement, ".1f", "%"), human_bytes(r.file_bytes),
          fmt(r.size_ratio, ".2f", "x"), fmt(r.macs, ",")] for r in rows]))
    console.print(table(
        "Host (the evaluating machine, each run in its runtime; no ratio across runtimes)",
        ["run", "runtime", "p50 ms", "speed ×", "peak RAM (process)", "RAM ×",
         "reference runtime"],
        [[r.name, r.host.runtime or "-", fmt(r.host.latency_ms, ".3f"),
          fmt(r.host.latency_ratio, ".2f", "x"), human_mib(r.host.peak_memory_mb),
          fmt(r.host.memory_ratio, ".2f", "x"), r.baseline.runtime or "-"] for r in rows]))
    with_device = [r for r in rows if r.device is not None]
    if with_device:
        console.print(table(
            "Device (static: arena + I/O in RAM, constants in flash, against the device)",
            ["run", "device", "verdict", "RAM arena + I/O", "RAM needed / limit",
             "flash needed / limit"],
            [[r.name, f"{d.device} ({d.runtime})", _verdict(d.label),
              f"{human_bytes(d.arena_bytes)} + {human_bytes(d.io_bytes)}"
              + (" (estimate)" if d.memory_source == "graph" else ""),
              f"{human_bytes(d.ram_needed_bytes)} / {human_bytes(d.ram_limit_bytes)}",
              f"{human_bytes(d.flash_needed_bytes)} / {human_bytes(d.flash_limit_bytes)}"]
             for r in with_device if (d := r.device) is not None]))
    for r in rows:
        if r.fidelity:
            console.print(f"[bold red]degraded[/]: {r.name}: {r.fidelity['message']}",
                          highlight=False)
        for note in r.notes:
            console.print(f"note: {r.name}: {note}", highlight=False, markup=False)


def _quality_text(row: ComparisonRow) -> str:
    """The run's primary metric in its unit (``accuracy 91.20%``, ``mean cosine 0.9931``)."""
    q = row.quality
    return f"{q['label']} {q['text']}" if q and q.get("value") is not None else "-"


def _quality_change(row: ComparisonRow) -> str:
    q = row.quality
    if not q or q.get("change") is None:
        return "-"
    return f"{q['change']:+.{2 if q['key'] == 'accuracy' else 4}f}"


def _verdict(label: str) -> str:
    colour = "green" if label == "fits" else "yellow" if label.startswith("unsupported") \
        else "red"
    return f"[{colour}]{label}[/]"


@app.command("export")
def export(ref: Annotated[str, typer.Argument(help="Run id or name.")],
           out: Annotated[Path, typer.Option("--out", help="Directory to write into.")]) -> None:
    """Write a run's output model with its metrics, pipeline and lineage."""
    for path in services().export_run(ref, out):
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            console.print(f"unpacked {path}/ ({len(files)} files, "
                          f"{human_bytes(sum(p.stat().st_size for p in files))})")
        else:
            console.print(f"wrote {path} ({human_bytes(path.stat().st_size)})")


#: Seconds a connection may take to send a request's headers, and stay idle between
#: requests (slow or stalled clients hold a connection no longer).
HEADER_TIMEOUT_S = 10


class ServerLogLevel(StrEnum):
    critical = "critical"
    error = "error"
    warning = "warning"
    info = "info"
    debug = "debug"


@app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    log_level: Annotated[ServerLogLevel, typer.Option(
        help="Server log level; info and debug also log each request.")] = ServerLogLevel.info,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="Server processes sharing the port and the database (each "
        "executes runs; one executes each run). For PostgreSQL; with the default SQLite "
        "file they are safe too but write one at a time.")] = 1,
    broker: Annotated[str | None, typer.Option(
        help="Celery broker URL (amqp://... or redis://...): runs made with a site queue "
        "their steps there for the site's workers (default: TINYMLAAS_BROKER_URL; unset, "
        "every step runs in this server's processes).")] = None,
) -> None:
    """Start the Studio server (API under /api/v1) on this machine's stores.

    Command and image steps are off unless TINYMLAAS_EXTERNAL_STEPS allows them;
    X-Forwarded-For is believed only from TINYMLAAS_TRUSTED_PROXIES.
    """
    from granian.constants import Interfaces
    from granian.http import HTTP1Settings
    from granian.log import LogLevels
    from granian.server import Server

    from tinymlaas.config import get_settings
    from tinymlaas.store import MetadataStore

    if broker:
        os.environ["TINYMLAAS_BROKER_URL"] = broker  # seen by every server process
        get_settings.cache_clear()
    settings = get_settings()
    console.print(f"tinymlaas server on http://{host}:{port} (API docs: /api/v1/docs)"
                  + (f", {workers} worker processes" if workers > 1 else ""))
    # Migrate once here, so the workers do not race to create the schema.
    MetadataStore(settings.resolved_database_url).close()
    # granian: under overload its processes serve every connection in turn (a p99 near the
    # median where uvicorn's was 10x it). A request's headers must arrive within
    # HEADER_TIMEOUT_S of the connection or the previous response, or it is closed.
    Server("tinymlaas.server:served_app", address=host, port=port,
           interface=Interfaces.ASGI, workers=workers, factory=True,
           http1_settings=HTTP1Settings(header_read_timeout=HEADER_TIMEOUT_S * 1000),
           log_level=LogLevels(log_level.value),
           log_access=log_level in {ServerLogLevel.info, ServerLogLevel.debug}).serve()


# deleting ----------------------------------------------------------------------------------

YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
ForceOpt = Annotated[bool, typer.Option("--force", help="Also delete the runs that use it.")]


def _deleted(what: str, deletion, as_json: bool) -> None:
    if as_json:
        return print_json(deletion)
    extra = f" and {len(deletion.runs)} run(s)" if deletion.runs and what != "run" else ""
    console.print(f"deleted {what}{extra}; freed {deletion.freed_artifacts} artifact(s), "
                  f"{human_bytes(deletion.freed_bytes)}")


def _confirm(question: str, yes: bool) -> None:
    if not yes:
        typer.confirm(question, abort=True)


@runs_app.command("delete")
def runs_delete(ref: Annotated[str, typer.Argument(help="Run id or name.")],
                yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Delete a finished run; the artifacts only it used are freed."""
    _confirm(f"Delete run {ref}?", yes)
    _deleted("run", services().delete_run(ref), as_json)


@models_app.command("delete")
def models_delete(ref: Annotated[str, typer.Argument(help="Model id or name.")],
                  force: ForceOpt = False, yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Delete a model (refused while runs start from it, unless --force deletes them too)."""
    _confirm(f"Delete model {ref}{' and its runs' if force else ''}?", yes)
    _deleted("model", services().delete_model(ref, force=force), as_json)


@datasets_app.command("delete")
def datasets_delete(ref: Annotated[str, typer.Argument(help="Dataset id or name.")],
                    force: ForceOpt = False, yes: YesOpt = False,
                    as_json: JsonOpt = False) -> None:
    """Delete a dataset (refused while runs use it, unless --force deletes them too)."""
    _confirm(f"Delete dataset {ref}{' and its runs' if force else ''}?", yes)
    _deleted("dataset", services().delete_dataset(ref, force=force), as_json)


@projects_app.command("list")
def projects_list(as_json: JsonOpt = False) -> None:
    """The projects here (on a server: yours and those shared with you)."""
    items = services().list_projects()
    if as_json:
        return print_json(items)
    console.print(table("Projects", ["id", "name", "created"],
                        [[p.id, p.name, p.created_at] for p in items]))


@projects_app.command("delete")
def projects_delete(project: Annotated[str, typer.Argument(help="Project id.")],
                    yes: YesOpt = False, as_json: JsonOpt = False) -> None:
    """Delete a project with all its models, datasets, runs and signing keys."""
    _confirm(f"Delete project {project} and everything in it?", yes)
    _deleted(f"project {project}", services().delete_project(project), as_json)


# signing keys ------------------------------------------------------------------------------

def _show_key(key, as_json: bool) -> None:
    if as_json:
        return print_json(key)
    console.print(f"project {key.project}: key [bold]{key.fingerprint}[/]"
                  + (f" ({len(key.retired)} retired)" if key.retired else ""))
    console.print(key.public_key_pem.rstrip(), markup=False, highlight=False)


@keys_app.command("show")
def keys_show(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Show the public signing key (made on first use); put it in the bootloader."""
    _show_key(services().signing_key(project), as_json)


@keys_app.command("rotate")
def keys_rotate(project: ProjectOpt = None,
                yes: Annotated[bool, typer.Option("--yes", help="Do not ask.")] = False,
                as_json: JsonOpt = False) -> None:
    """Replace the signing key; the old one is retired, and devices need the new public key
    before they accept images signed after this."""
    if not yes:
        typer.confirm("Rotate the signing key? Devices must receive the new public key",
                      abort=True)
    _show_key(services().signing_key(project, rotate=True), as_json)


# users -------------------------------------------------------------------------------------

def _accounts():
    from tinymlaas.config import get_settings

    if get_settings().server_url:
        raise InvalidInputError("`tinymlaas users` works on the server's own database: run "
                                "it on the server's machine, without --server")
    from tinymlaas.service import Services
    from tinymlaas.service.users import AccountService

    return AccountService(Services())


@users_app.command("list")
def users_list(as_json: JsonOpt = False) -> None:
    """The server's accounts and who is an admin."""
    users = _accounts().store.list_users()
    if as_json:
        return print_json(users)
    console.print(table("Users", ["email", "name", "admin", "created"],
                        [[u.email, u.name, "yes" if u.is_admin else "", u.created_at]
                         for u in users]))


@users_app.command("promote")
def users_promote(email: Annotated[str, typer.Argument(help="The account's email.")],
                  revoke: Annotated[bool, typer.Option("--revoke", help="Take the admin role "
                                                       "away instead.")] = False) -> None:
    """Make an account an admin (admins may run command and image steps when
    TINYMLAAS_EXTERNAL_STEPS=admins)."""
    user = _accounts().promote(email, admin=not revoke)
    console.print(f"{user.email} is {'now' if user.is_admin else 'no longer'} an admin")


@app.command("analyze")
def analyze(
    model: Annotated[str, typer.Argument(help="An ONNX file, a registered model, or a run "
                                         "(its output).")],
    device: Annotated[str | None, typer.Option(help="Device for the fit verdict.")] = None,
    runtime: Annotated[str, typer.Option(help="c, tflite-micro or onnxruntime.")] = "c",
    layers: Annotated[bool, typer.Option("--layers", help="Also profile each compiled kernel "
                                         "call: MACs, output shape, live arena bytes, "
                                         "flash bytes.")] = False,
    instructions: Annotated[bool, typer.Option("--instructions", help="With --layers: also "
                                               "count each call's instructions on the "
                                               "emulated Cortex-M4 (QEMU).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Static analysis: weights (flash), peak activations (RAM), MACs, operator support,
    and whether it fits a device."""
    analysis = services().analyze(model, device, runtime, layers=layers,
                                  instructions=instructions)
    if as_json:
        return print_json(analysis)
    console.print(table(f"Analysis of {analysis.model}", ["", ""], analysis.to_table_rows()))
    if layers:
        _print_layers(analysis.layers)
    if analysis.fit is not None and not analysis.fit.fits:
        raise typer.Exit(1)


def _print_layers(rows: list[Any] | None) -> None:
    """The per-layer table of ``analyze --layers`` (each call's first node and how many
    more it implements; ``--json`` names them all)."""
    from tinymlaas.domain.units import human_bytes

    if rows is None:
        err_console.print("no per-layer profile: the compiler cannot lower this model "
                          "(memory figures above are the graph's estimate)")
        return
    counted = any(getattr(r, "instructions", None) is not None for r in rows)
    console.print(table("Layers", ["#", "op", "node", "MACs", "output", "live arena",
                                   "flash", *(["M4 instr"] if counted else [])],
                        [[r.step, r.op_type,
                          (r.nodes[0] if r.nodes else "") + (f" (+{len(r.nodes) - 1})"
                                                             if len(r.nodes) > 1 else ""),
                          f"{r.macs:,}",
                          "x".join(map(str, r.output_shape)), human_bytes(r.live_bytes),
                          human_bytes(r.flash_bytes),
                          *([f"{r.instructions:,}"] if counted else [])] for r in rows]))


@app.command("demo")
def demo(
    epochs: Annotated[int, typer.Option(help="Training epochs of the demo CNN.")] = 15,
) -> None:
    """Train a CNN on digits, run five pipelines and print the comparison."""
    from tinymlaas.cli.demo import run_demo

    run_demo(epochs=epochs)


from tinymlaas.cli.optimize import optimize_command, searches_app  # noqa: E402

app.command("optimize")(optimize_command)
app.add_typer(searches_app, name="searches")

from tinymlaas.cli.fleet import deploy_command, fleet_app  # noqa: E402

app.add_typer(fleet_app, name="fleet")
app.command("deploy")(deploy_command)

from tinymlaas.cli.sites import sites_app  # noqa: E402

app.add_typer(sites_app, name="sites")

from tinymlaas.cli.worker import worker_command  # noqa: E402

app.command("worker")(worker_command)

# The device agent (its module imports only typer; the agent itself loads when it runs).
from tinymlaas.agent.cli import agent as agent_command  # noqa: E402

app.command("agent")(agent_command)


#: Top-level packages of the ``server`` extra (pyproject.toml).
SERVER_STACK = frozenset({"torch", "torchao", "torch_pruning", "onnx", "onnxruntime",
                          "onnxscript", "onnxsim", "optuna", "sklearn", "PIL", "sqlalchemy",
                          "alembic", "psycopg", "psutil", "fastapi", "starlette", "uvicorn",
                          "granian", "multipart", "argon2", "huggingface_hub", "transformers",
                          "jinja2", "plotly", "zxcvbn", "fastapi_offline", "imgtool"})


#: Libraries' notices at import that tell a user of this tool nothing: torchao's optional
#: GPU kernels that a CPU build cannot load, torch's notes on pytree registration, the ONNX
#: exporter skipping torchvision's ops when torchvision is not installed.
_QUIET_LOGGERS = ("torchao", "torch.utils._pytree", "torch.onnx._internal.exporter._registration")


def main(argv: list[str] | None = None) -> None:
    """Entry point: our errors print one readable line and exit with their code."""
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        app(args=argv, prog_name="tinymlaas")
    except TinymlaasError as exc:
        err_console.print(f"[red]error:[/] {exc.message}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in SERVER_STACK:
            raise
        # `pip install tinymlaas` is the SDK and the agent; the rest needs the server stack
        err_console.print(f"[red]error:[/] this command needs {exc.name}, part of the server "
                          "stack: pip install 'tinymlaas\\[server]'", highlight=False,
                          soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
