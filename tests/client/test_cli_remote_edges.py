"""The CLI with ``--server``: analyze, optimize, runs cancel, and a server that cannot be
reached."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import step_python
from tinymlaas.api.testing import LiveServer, serve_in_thread
from tinymlaas.client import Client
from tinymlaas.config import Settings
from tinymlaas.devices.analysis import analyze_model
from tinymlaas.errors import ServiceUnavailableError
from tinymlaas.server import create_app, open_studio


def _point_cli_at(monkeypatch: pytest.MonkeyPatch, url: str, token: str) -> None:
    from tinymlaas.config import get_settings

    monkeypatch.setenv("TINYMLAAS_SERVER", url)
    monkeypatch.setenv("TINYMLAAS_TOKEN", token)
    get_settings.cache_clear()


@pytest.fixture
def remote(live: LiveServer, sdk: Client, monkeypatch: pytest.MonkeyPatch, cli):
    _point_cli_at(monkeypatch, live.url, sdk.create_token("cli").token)
    yield cli
    from tinymlaas.config import get_settings

    get_settings.cache_clear()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_server_is_exit_7_with_one_line(cli, settings) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    for args in (["models", "list"], ["runs", "cancel", "run_x"], ["analyze", "some-model"]):
        code, _, err = cli("--server", url, "--token", "tmls_x", *args)
        assert code == 7, (args, err)
        assert err.startswith("error: cannot reach the tinymlaas server at " + url), err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    # The SDK raises the same typed error (503 / exit 7), naming the server.
    with Client(url, token="tmls_x") as client, pytest.raises(ServiceUnavailableError) as info:
        client.health()
    assert info.value.exit_code == 7 and info.value.http_status == 503
    assert info.value.details["server"] == url
    with Client(url, token="tmls_x") as client, pytest.raises(ServiceUnavailableError):
        client.download_model("m", Path(settings.home) / "m.onnx")
    with Client(url, token="tmls_x") as client, pytest.raises(ServiceUnavailableError):
        list(client.events("run_x"))
    code, _, err = cli("--server", "localhost:1", "--token", "tmls_x", "models", "list")
    assert code == 7 and "localhost:1" in err


def test_analyze_and_optimize_against_a_server(remote, sdk: Client, tiny_onnx: Path,
                                               tmp_path: Path) -> None:
    assert remote("models", "add", tiny_onnx, "--name", "logreg")[0] == 0
    assert remote("datasets", "add", "digits")[0] == 0
    expected = analyze_model(tiny_onnx, None)

    # A registered model: downloaded from the server, analysed here.
    code, out, err = remote("analyze", "logreg", "--json")
    assert code == 0, err
    body = json.loads(out)
    assert body["model"] == "logreg"
    assert (body["parameters"], body["weight_bytes"], body["macs"]) == (
        expected.parameters, expected.weight_bytes, expected.macs)
    # A device profile from the server gives the fit verdict.
    code, out, err = remote("analyze", "logreg", "--device", "stm32-nucleo-l4r5zi", "--json")
    assert code == 0, err
    assert json.loads(out)["fit"]["device"] == "stm32-nucleo-l4r5zi"
    # A local file still works with --server set.
    code, out, err = remote("analyze", tiny_onnx)
    assert code == 0, err
    assert "Analysis of" in out
    # A run's output.
    pipeline = tmp_path / "fuse.yaml"
    pipeline.write_text("name: fused\nmodel: logreg\ndataset: digits\nsteps:\n  - fuse\n")
    code, out, err = remote("run", pipeline, "--json")
    assert code == 0, err
    run = json.loads(out)
    code, out, err = remote("analyze", run["id"], "--json")
    assert code == 0, err
    assert json.loads(out)["model"] == run["id"]
    assert json.loads(out)["parameters"] == expected.parameters
    code, _, err = remote("analyze", "nope")
    assert code == 3 and "not found" in err

    # optimize with a bad flag is refused before it creates anything: one line, exit 2
    # (the server runs valid ones: tests/client/test_searches_remote.py).
    code, out, err = remote("optimize", "--model", "logreg", "--dataset", "digits",
                            "--max-trials", "0")
    assert code == 2
    assert err.startswith("error: invalid search: max_trials")
    assert len(err.strip().splitlines()) == 1
    assert [r.id for r in sdk.list_runs()] == [run["id"]] and sdk.list_searches() == []

    # A finished run cannot be cancelled (409 from the server, exit 4 here).
    code, _, err = remote("runs", "cancel", run["id"])
    assert code == 4 and "only a queued or running run can be cancelled" in err


@pytest.fixture
def live_with_commands(tmp_path: Path) -> Iterator[LiveServer]:
    """A server on SQLite that allows command steps."""
    studio = open_studio(Settings(home=tmp_path / "server-home",
                                  database_url=f"sqlite:///{tmp_path / 'meta.db'}",
                                  step_timeout_s=120, step_memory_mb=4096,
                                  external_steps="everyone"))
    try:
        with serve_in_thread(create_app(studio=studio)) as server:
            yield server
    finally:
        studio.runs.shutdown(wait=True)
        studio.services.close()


def test_cancel_a_running_run_on_a_server(live_with_commands: LiveServer, cli,
                                          monkeypatch: pytest.MonkeyPatch, tiny_onnx: Path,
                                          shared_dir: Path) -> None:
    marker = shared_dir / "sleeping"
    with Client(live_with_commands.url) as sdk:
        sdk.register("erin@example.com", "correct horse battery", "Erin")
        sdk.login("erin@example.com", "correct horse battery")
        _point_cli_at(monkeypatch, live_with_commands.url, sdk.create_token("cli").token)
        model = sdk.upload_model(tiny_onnx, name="logreg")
        data = sdk.add_builtin_dataset("digits")
        sdk.register_transformer("sleepy", command=[
            step_python(), "-c",
            "import sys, time\nopen(sys.argv[3], 'w').close(); time.sleep(120)",
            "{in}", "{out}", str(marker)])
        run = sdk.create_run(model.id, data.id, pipeline={"steps": ["sleepy"],
                                                          "evaluate": False})
        deadline = time.monotonic() + 90
        while not marker.exists():  # the step's command is sleeping from then on
            assert time.monotonic() < deadline, sdk.get_run(run.id)
            time.sleep(0.05)
        assert sdk.get_run(run.id).status == "running"
        code, out, err = cli("runs", "cancel", run.id)
        assert code == 0, err
        assert run.id in out and "cancel" in out
        final = sdk.follow(run.id)
        assert final.status == "cancelled"
        assert final.steps[0].status == "cancelled"
