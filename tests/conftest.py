"""Shared fixtures: a trained digits CNN (once per session), stores on SQLite and
PostgreSQL, a services facade on a temp home, and a CLI runner."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import need_service
from tinymlaas.config import Settings

# Test plug-ins come in through the real entry-point machinery; on sys.path before any
# worker starts, so the fork server sees them too.
sys.path.insert(0, str(Path(__file__).parent / "plugins"))

POSTGRES_ADMIN_URL = os.environ.get("TINYMLAAS_TEST_POSTGRES",
                                    "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """The demo CNN trained on digits (about 150k parameters) as a .pt2, and its accuracy."""
    from tinymlaas.demo import train_digits_cnn

    target = tmp_path_factory.mktemp("models") / "digits-cnn.pt2"
    return train_digits_cnn(target, epochs=15)


@pytest.fixture(scope="session")
def digits_onnx(digits_cnn: tuple[Path, float], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same CNN exported to float32 ONNX (dynamic batch)."""
    from tinymlaas.domain import ArtifactKind
    from tinymlaas.transformers.base import StepContext
    from tinymlaas.transformers.torch.export_onnx import ExportOnnx, ExportParams

    out = tmp_path_factory.mktemp("onnx")
    ctx = StepContext(input_path=digits_cnn[0], input_kind=ArtifactKind.torch_exported,
                      params=ExportParams(), out_dir=out, work_dir=out)
    return ExportOnnx().run(ctx).path


@pytest.fixture(scope="session")
def digits_access(tmp_path_factory: pytest.TempPathFactory):
    """The built-in digits as a step would see them (canonical NPZ, default splits)."""
    from tinymlaas.domain import DatasetSplits
    from tinymlaas.formats.datasets import load_builtin, write_canonical
    from tinymlaas.transformers.base import DatasetAccess

    data = load_builtin("digits")
    path = write_canonical(data, tmp_path_factory.mktemp("data") / "digits.npz")
    return DatasetAccess(path=path, task=data.task, splits=DatasetSplits(), num_classes=10)


@pytest.fixture
def run_transformer(tmp_path: Path, digits_access):
    """Run a transformer in-process on a file: ``run_transformer("fuse", path, **params)``."""
    from tinymlaas.domain import ArtifactKind
    from tinymlaas.transformers.base import StepContext
    from tinymlaas.transformers.registry import get_transformer, validate_params

    def invoke(name: str, path: Path, kind: ArtifactKind = ArtifactKind.onnx, **params):
        out = tmp_path / f"out-{uuid.uuid4().hex[:6]}"
        out.mkdir()
        ctx = StepContext(input_path=path, input_kind=kind,
                          params=validate_params(name, params), out_dir=out, work_dir=out,
                          dataset=digits_access)
        return get_transformer(name).run(ctx)

    return invoke


def _postgres_url() -> str | None:
    """A fresh PostgreSQL database for this test session, or None when unreachable."""
    import sqlalchemy as sa

    try:
        engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
        name = f"tinymlaas_test_{uuid.uuid4().hex[:10]}"
        with engine.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        engine.dispose()
    except Exception:
        return None
    return POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name


def _drop_postgres(url: str) -> None:
    import sqlalchemy as sa

    name = url.rsplit("/", 1)[1]
    engine = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The same test body against SQLite and PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'meta.db'}"
        return
    url = _postgres_url()
    need_service(url is not None, f"PostgreSQL at {POSTGRES_ADMIN_URL}")
    assert url is not None
    try:
        yield url
    finally:
        _drop_postgres(url)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory command steps may read and write: as root they run as the sandbox user,
    who cannot enter pytest's private ``tmp_path``."""
    path = Path(tempfile.mkdtemp(prefix="tinymlaas-test-"))
    path.chmod(0o777)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings on a fresh home under tmp_path, also exported for CLI calls in this test."""
    from tinymlaas.config import get_settings

    home = tmp_path / "home"
    monkeypatch.setenv("TINYMLAAS_HOME", str(home))
    get_settings.cache_clear()
    yield Settings(home=home, step_timeout_s=300, step_memory_mb=4096)
    get_settings.cache_clear()


@pytest.fixture
def services(settings: Settings):
    from tinymlaas.service import Services

    svc = Services(settings)
    yield svc
    svc.close()


@pytest.fixture
def registered(services, digits_cnn):
    """The demo CNN and the digits dataset registered; returns (model, dataset)."""
    model = services.add_model(digits_cnn[0], "digits-cnn")
    dataset = services.add_dataset("digits")
    return model, dataset


@pytest.fixture
def cli(settings: Settings, capsys: pytest.CaptureFixture[str]):
    """Call the CLI in-process: ``code, out, err = cli("models", "list")``. Options that the
    CLI turns into environment variables (``--server``, ``--home``) last for one call, as
    they would for one process."""
    from tinymlaas.cli.main import main
    from tinymlaas.config import get_settings

    def invoke(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        environ = os.environ.copy()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
        finally:
            os.environ.clear()
            os.environ.update(environ)
            get_settings.cache_clear()
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return invoke


@pytest.fixture(scope="session")
def examples_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "examples"


def copy_to(src: Path, dst: Path) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)
    return dst
