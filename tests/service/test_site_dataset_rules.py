"""Datasets that stay at a site, without a broker round trip: the source's form, the
worker's reading of its data root, the reproducible canonical NPZ, and what the server
checks and refuses with the metadata a site reported (a real SQLite store)."""

from __future__ import annotations

import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tinymlaas.artifacts import LocalArtifactStore
from tinymlaas.config import Settings
from tinymlaas.contracts.jobs import SiteData
from tinymlaas.domain import Artifact, ArtifactKind, Dataset
from tinymlaas.domain.sites import SiteDataset
from tinymlaas.errors import ConflictError, IncompatibleChainError, InvalidInputError, NotFoundError
from tinymlaas.formats.datasets import LoadedDataset, load_builtin, write_canonical
from tinymlaas.service import Services
from tinymlaas.service.pipelines import parse_pipeline
from tinymlaas.service.site_datasets import parse_site_source
from tinymlaas.service.sites import Sites
from tinymlaas.worker import site_data

QUANTIZE = parse_pipeline({"steps": [{"quantize-static": {"format": "qdq"}}]}, "p")


@pytest.mark.parametrize(("source", "expected"), [
    ("site://factory/data.npz", ("factory", "data.npz")),
    ("site://factory/plant a/2026/data.csv", ("factory", "plant a/2026/data.csv")),
])
def test_a_site_source_names_a_site_and_a_relative_path(source: str,
                                                        expected: tuple[str, str]) -> None:
    assert parse_site_source(source) == expected


@pytest.mark.parametrize("source", [
    "site://factory/../data.npz", "site://factory/a/../../b", "site://factory/./x.npz",
    "site://factory//x.npz", "site://factory/x/", "site://factory/", "site:///x.npz",
    "site://factory/a\\b.npz", "site://factory/a\nb.npz", "file:///etc/passwd",
    "site://factory/" + "a" * 501])
def test_a_site_source_that_could_leave_the_data_root_is_refused(source: str) -> None:
    with pytest.raises(InvalidInputError):
        parse_site_source(source)


def test_the_worker_reads_only_files_under_its_data_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "plant").mkdir(parents=True)
    (root / "plant" / "data.npz").write_bytes(b"x")
    (tmp_path / "secret.npz").write_bytes(b"s")
    (root / "out.npz").symlink_to(tmp_path / "secret.npz")
    (root / "up").symlink_to(tmp_path)
    assert site_data.resolve(root, "plant/data.npz") == (root / "plant" / "data.npz").resolve()
    for escaping in ("out.npz", "up/secret.npz", "../secret.npz", str(tmp_path / "secret.npz")):
        with pytest.raises(InvalidInputError, match="leads outside"):
            site_data.resolve(root, escaping)
    with pytest.raises(NotFoundError, match="no file"):
        site_data.resolve(root, "plant")  # a directory
    with pytest.raises(NotFoundError, match="no file"):
        site_data.resolve(root, "plant/missing.npz")


def test_the_canonical_npz_is_the_same_bytes_every_time(tmp_path: Path) -> None:
    digits = load_builtin("digits")
    first = write_canonical(digits, tmp_path / "a.npz")
    with zipfile.ZipFile(first) as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert [info.filename for info in zf.infolist()] == ["X.npy", "y.npy", "class_names.npy"]
    copy = LoadedDataset(X=digits.X.copy(), y=digits.y.copy(), task=digits.task,
                         class_names=list(digits.class_names), source_format="npz")
    second = write_canonical(copy, tmp_path / "b.npz")
    assert first.read_bytes() == second.read_bytes()
    with np.load(first, allow_pickle=False) as data:
        np.testing.assert_array_equal(data["X"], digits.X)
        np.testing.assert_array_equal(data["y"], digits.y)


def test_a_worker_describes_a_file_and_refuses_it_once_changed(tmp_path: Path) -> None:
    root, cache = tmp_path / "root", LocalArtifactStore(tmp_path / "cache")
    root.mkdir()
    digits = load_builtin("digits")
    np.savez(root / "d.npz", X=digits.X[:300], y=digits.y[:300])
    data = SiteData(path="d.npz")
    described = site_data.describe(root, data, cache, tmp_path / "work")
    assert (described["num_samples"], described["feature_shape"], described["num_classes"]) \
        == (300, [1, 8, 8], 10)
    assert cache.exists(described["sha256"])
    assert described["fields"] is None and described["source_format"] == "npz"
    # Another worker of the site (an empty cache) makes the same artifact from the file.
    fresh = LocalArtifactStore(tmp_path / "fresh")
    site_data.materialize(root, data, described["sha256"], fresh, tmp_path / "work2")
    assert fresh.path(described["sha256"]).read_bytes() == \
        cache.path(described["sha256"]).read_bytes()
    np.savez(root / "d.npz", X=digits.X[:300] * 2, y=digits.y[:300])
    with pytest.raises(InvalidInputError, match="changed since the dataset was registered"):
        site_data.materialize(root, data, described["sha256"],
                              LocalArtifactStore(tmp_path / "other"), tmp_path / "work3")


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Services]:
    # A broker that is never reached: these checks refuse before anything is published.
    svc = Services(Settings(home=tmp_path / "home", broker_url="amqp://127.0.0.1:9//"))
    try:
        yield svc
    finally:
        svc.close()


def _site_dataset(services: Services, site_id: str, fields: dict | None) -> Dataset:
    """A dataset as a site's worker would have described it (no bytes here)."""
    sha = "ab" * 32
    services.meta.add_artifact(Artifact(sha256=sha, kind=ArtifactKind.dataset_npz,
                                        size_bytes=1000, filename="sd.npz"))
    return services.meta.add_dataset(Dataset(
        id="data_site1", name="sd", project="default", artifact_sha=sha, source_format="npz",
        num_samples=100, feature_shape=[1, 8, 8], num_classes=10,
        class_names=[str(i) for i in range(10)], location="site://factory/d.npz",
        site=SiteDataset(site_id=site_id, path="d.npz", source_sha256="cd" * 32,
                         source_bytes=2000, fields=fields)))


def test_runs_on_a_sites_data_run_there_and_nothing_reads_it_here(
        services: Services, tmp_path: Path) -> None:
    from tinymlaas.api.testing import write_digits_onnx

    sites = Sites(services)
    factory, _ = sites.create("default", "factory")
    annex, _ = sites.create("default", "annex")
    model = services.add_model(write_digits_onnx(tmp_path / "m.onnx"), "m")
    dataset = _site_dataset(services, factory.id, None)
    assert services.get_dataset("sd").site.site_id == factory.id  # stored and read back

    # No live worker at the site: refused, naming the way to start one.
    with pytest.raises(ConflictError, match="'factory' has no live worker"):
        services.create_run(QUANTIZE, model=model.id, dataset=dataset.id)
    sites.heartbeat(factory, "w1", "host", [])
    sites.heartbeat(annex, "w2", "host", [])
    run = services.create_run(QUANTIZE, model=model.id, dataset=dataset.id)
    assert run.site == factory.id  # chosen by where the data is
    assert services.create_run(QUANTIZE, model=model.id, dataset=dataset.id,
                               site="factory").site == factory.id
    with pytest.raises(InvalidInputError, match="a run reads one site's data"):
        services.create_run(QUANTIZE, model=model.id, dataset=dataset.id, site="annex")
    with pytest.raises(ConflictError, match="never reach this server"):
        services.dataset_file(dataset)


def test_a_sites_reported_arrays_are_checked_against_the_model_inputs(
        services: Services, tmp_path: Path) -> None:
    from tinymlaas.api.testing import write_digits_onnx

    sites = Sites(services)
    factory, _ = sites.create("default", "factory")
    sites.heartbeat(factory, "w1", "host", [])
    model = services.add_model(write_digits_onnx(tmp_path / "m.onnx"), "m")
    name = model.inputs[0].name
    dataset = _site_dataset(services, factory.id, {"input_ids": ["<i8", [16]]})
    with pytest.raises(IncompatibleChainError, match=f"no array for model input '{name}'"):
        services.create_run(QUANTIZE, model=model.id, dataset=dataset.id)


def test_without_a_broker_a_site_dataset_is_refused(tmp_path: Path) -> None:
    svc = Services(Settings(home=tmp_path / "home"))
    try:
        Sites(svc).create("default", "factory")
        with pytest.raises(ConflictError, match="no broker"):
            svc.add_dataset("site://factory/data.npz")
        with pytest.raises(NotFoundError):
            svc.add_dataset("site://elsewhere/data.npz")
        with pytest.raises(InvalidInputError, match="tokenized"):
            from tinymlaas.formats.text_datasets import TextOptions

            svc.add_dataset("site://factory/t.csv", text=TextOptions(tokenizer="m"))
        assert svc.list_datasets() == []
    finally:
        svc.close()


def test_registrations_waiting_on_sites_are_bounded(services: Services) -> None:
    """Each registration holds a request thread until its site answers: a project waits on
    at most two at once, so a site that never answers cannot take every thread."""
    from tinymlaas.errors import RateLimitedError
    from tinymlaas.service import site_datasets

    sites = Sites(services)
    factory, _ = sites.create("default", "factory")
    sites.heartbeat(factory, "w1", "host", [])
    with site_datasets._slot("default"), site_datasets._slot("default"):
        with pytest.raises(RateLimitedError, match="being described"):
            services.add_dataset("site://factory/data.npz")
        with site_datasets._slot("other-project"):  # another project still may
            assert site_datasets._in_flight == {"default": 2, "other-project": 1}
    assert site_datasets._in_flight == {}


@pytest.mark.parametrize("fields", [{"x": ["O", [1]]}, {"x": ["<f4", [-1]]},
                                    {"x": ["<U8", [1]]}, {"x": ["<f4", [1] * 17]}])
def test_a_sites_description_is_checked_before_it_is_used(fields: dict) -> None:
    from pydantic import ValidationError

    from tinymlaas.service.site_datasets import _Description

    good = {"sha256": "ab" * 32, "size": 1, "source_sha256": "cd" * 32, "source_bytes": 1,
            "source_format": "npz", "task": "classification", "num_samples": 1,
            "feature_shape": [3], "fields": {"x": ["<f4", [3]]}}
    assert _Description.model_validate(good).fields == {"x": ("<f4", [3])}
    with pytest.raises(ValidationError):
        _Description.model_validate({**good, "fields": fields})
