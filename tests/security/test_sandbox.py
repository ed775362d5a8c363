"""Foreign code (command and image steps) runs contained, and nothing a step starts
outlives it: real worker processes, real commands, real ``kill -9``."""

from __future__ import annotations

import json
import logging
import os
import pwd
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from helpers import linear_onnx, step_python
from tinymlaas.config import Settings
from tinymlaas.domain import Pipeline, RunStatus, StepStatus
from tinymlaas.executors.procs import OWNER_FILE, new_scratch_dir, process_start
from tinymlaas.service import Services
from tinymlaas.transformers import sandbox
from tinymlaas.transformers.external import docker_argv

ROOT = os.geteuid() == 0
SECRETS = {"TINYMLAAS_SMTP_PASSWORD": "smtp-password-123", "AWS_SECRET_ACCESS_KEY": "aws-456",
           "TINYMLAAS_WEBHOOK_SECRET": "hook-789"}

#: Reports what the command sees into its one output file.
INSPECT = r"""
import json, os, resource, sys, time
out, params = sys.argv[1], json.load(open(sys.argv[2]))
def readable(path):
    try:
        open(path, "rb").read(16)
        return True
    except OSError:
        return False
def listable(path):
    try:
        os.listdir(path)
        return True
    except OSError:
        return False
limits = {name: resource.getrlimit(getattr(resource, name)) for name in
          ("RLIMIT_CPU", "RLIMIT_AS", "RLIMIT_FSIZE", "RLIMIT_NOFILE", "RLIMIT_NPROC",
           "RLIMIT_CORE")}
children, refused = [], None
r, w = os.pipe()
for _ in range(2000):  # a small fork bomb: the process cap stops it
    try:
        pid = os.fork()
    except OSError as exc:
        refused = exc.errno
        break
    if pid == 0:
        os.close(w)
        os.read(r, 1)
        os._exit(0)
    children.append(pid)
os.close(w)
for pid in children:
    os.waitpid(pid, 0)
json.dump({"uid": os.getuid(), "gid": os.getgid(), "groups": os.getgroups(),
           "cwd": os.getcwd(), "env": dict(os.environ), "limits": limits,
           "forked": len(children), "refused": refused,
           "db_readable": readable(params["db"]), "home_listable": listable(params["home"]),
           "pgid_is_own": os.getpgid(0) == os.getpid(), "sid_is_own": os.getsid(0) == os.getpid()},
          open(os.path.join(out, "report.json"), "w"))
"""

#: Starts a child, and a double-forked ``setsid`` grandchild, writes the three pids to
#: ``argv[1]``, then sleeps (as do its descendants).
TREE = r"""
import os, sys, time
pids = [os.getpid()]
child = os.fork()
if child == 0:
    time.sleep(300)
    os._exit(0)
pids.append(child)
r, w = os.pipe()
middle = os.fork()
if middle == 0:
    os.setsid()
    grandchild = os.fork()
    if grandchild == 0:
        os.write(w, str(os.getpid()).encode())
        time.sleep(300)
        os._exit(0)
    os._exit(0)
os.close(w)
os.waitpid(middle, 0)
pids.append(int(os.read(r, 32)))
with open(sys.argv[1] + ".tmp", "w") as fh:
    fh.write(" ".join(map(str, pids)))
os.rename(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(300)
"""

#: Executes one run in its own process (a fresh fork server with this environment).
DRIVER = """
import sys
from tinymlaas.service import Services
run = Services().execute_run(sys.argv[1])
print(run.status.value, run.error or "")
"""


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def wait_until(condition: Callable[[], bool], limit_s: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + limit_s
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting: {what}"
        time.sleep(0.05)


def external(command: list[str], *, produces: str = "file", timeout_s: float | None = None,
             **params: object) -> Pipeline:
    step: dict[str, object] = {"transformer": "external",
                               "params": {"command": command, "produces": produces, **params}}
    if timeout_s is not None:
        step["timeout_s"] = timeout_s
    return Pipeline.model_validate({"name": "sandboxed", "evaluate": False, "steps": [step]})


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


@pytest.fixture
def svc(home: Path, tmp_path: Path) -> Iterator[Services]:
    services = Services(Settings(home=home, step_timeout_s=60, step_memory_mb=2048))
    services.add_model(linear_onnx(tmp_path / "linear.onnx"), "linear")
    services.add_dataset("digits")
    yield services
    services.close()


def create(svc: Services, pipeline: Pipeline) -> str:
    return svc.create_run(pipeline, model="linear", dataset="digits").id


def pids_in(path: Path) -> list[int]:
    wait_until(path.exists, what=f"{path.name} from the command")
    return [int(p) for p in path.read_text().split()]


def run_in_background(svc: Services, run_id: str) -> threading.Thread:
    thread = threading.Thread(target=svc.execute_run, args=(run_id,), daemon=True)
    thread.start()
    return thread


# (a) environment, (b) identity and private data, (c) working directory, (e) rlimits ---------


def test_a_command_runs_with_nothing_of_the_server(svc: Services, home: Path) -> None:
    db = home / "tinymlaas.db"
    assert db.exists() and (home.stat().st_mode & 0o777) == 0o700
    run_id = create(svc, external([step_python(), "-c", INSPECT, "{out}", "{params}"],
                                  env={"STEP_SETTING": "declared"},
                                  config={"db": str(db), "home": str(home)}))
    svc.close()
    # A fresh process, as a server is: its environment holds the secrets; its fork server
    # and workers inherit them, the command must not.
    env = {**os.environ, **SECRETS, "TINYMLAAS_HOME": str(home),
           "TINYMLAAS_STEP_TIMEOUT_S": "60", "TINYMLAAS_STEP_MEMORY_MB": "2048"}
    done = subprocess.run([sys.executable, "-c", DRIVER, run_id], env=env, capture_output=True,
                          text=True, timeout=300, check=False)
    assert done.returncode == 0 and done.stdout.startswith("succeeded"), \
        done.stdout + done.stderr
    services = Services(Settings(home=home))
    run = services.get_run(run_id)
    report = json.loads(services.artifact_path(run.output_sha).read_text())
    services.close()

    # (a) only the minimal environment, the contract and the declared variables
    seen = report["env"]
    assert set(seen) - {"LC_CTYPE"} == {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR",
                                        "TINYMLAAS_IN", "TINYMLAAS_OUT", "TINYMLAAS_PARAMS",
                                        "STEP_SETTING"}, seen
    assert seen["PATH"] == "/usr/local/bin:/usr/bin:/bin" and seen["STEP_SETTING"] == "declared"
    assert not any(secret in json.dumps(report) for secret in SECRETS.values())
    # (c) its own temporary directory, outside the data home, gone afterwards
    cwd = Path(report["cwd"])
    assert not cwd.is_relative_to(home) and cwd.is_relative_to(tempfile.gettempdir())
    for name in ("HOME", "TMPDIR", "TINYMLAAS_OUT"):
        assert Path(seen[name]).is_relative_to(cwd), name
    assert not cwd.exists()
    # its own session and process group
    assert report["pgid_is_own"] and report["sid_is_own"]
    # (b) unprivileged: as root, the sandbox user, who can read nothing of the home
    if ROOT:
        nobody = pwd.getpwnam("nobody")
        assert (report["uid"], report["gid"]) == (nobody.pw_uid, nobody.pw_gid)
        assert report["groups"] in ([], [nobody.pw_gid])
        assert not report["db_readable"] and not report["home_listable"]
    else:  # documented: a server that is not root runs commands as its own user
        assert report["uid"] == os.getuid()
    # (e) the limits, and the process cap stops a fork bomb
    limits = report["limits"]
    assert 1 <= limits["RLIMIT_CPU"][0] <= 60 * (os.cpu_count() or 1) + 1
    assert limits["RLIMIT_AS"] == [2 * 2048 * 2**20] * 2
    assert limits["RLIMIT_FSIZE"] == [4 * 2**30] * 2
    assert limits["RLIMIT_NOFILE"] == [1024, 1024]
    assert limits["RLIMIT_CORE"] == [0, 0]
    assert limits["RLIMIT_NPROC"][0] != resource.RLIM_INFINITY
    assert report["refused"] is not None and 0 < report["forked"] <= 256, report["forked"]


def test_output_links_to_server_files_are_refused(svc: Services, home: Path) -> None:
    link = ("import os, sys; os.symlink(sys.argv[2], os.path.join(sys.argv[1], 'model.onnx'))")
    run = svc.execute_run(create(svc, external(
        [step_python(), "-c", link, "{out}", str(home / "tinymlaas.db")], produces="onnx")))
    assert run.status is RunStatus.failed
    assert "only regular files and directories" in (run.steps[0].error or "")


# (d) a command's whole tree goes on cancel and on timeout ----------------------------------


def test_cancel_kills_the_whole_tree(svc: Services, shared_dir: Path) -> None:
    marker = shared_dir / "pids"
    run_id = create(svc, external([step_python(), "-c", TREE, str(marker)]))
    thread = run_in_background(svc, run_id)
    pids = pids_in(marker)
    assert not any(gone(pid) for pid in pids)
    svc.engine.cancel(run_id)
    thread.join(30)
    assert not thread.is_alive()
    run = svc.get_run(run_id)
    assert run.status is RunStatus.cancelled and run.steps[0].status is StepStatus.cancelled
    wait_until(lambda: all(gone(pid) for pid in pids), 10, "the command's tree to die")
    assert list((svc.settings.home / "procs").iterdir()) == []


def test_timeout_kills_the_whole_tree(svc: Services, shared_dir: Path) -> None:
    marker = shared_dir / "pids"
    run_id = create(svc, external([step_python(), "-c", TREE, str(marker)], timeout_s=4))
    thread = run_in_background(svc, run_id)
    pids = pids_in(marker)
    thread.join(60)
    assert not thread.is_alive()
    run = svc.get_run(run_id)
    assert run.status is RunStatus.failed
    assert "time" in (run.steps[0].error or ""), run.steps[0].error
    wait_until(lambda: all(gone(pid) for pid in pids), 10, "the command's tree to die")


# (f) image steps ---------------------------------------------------------------------------


def test_image_steps_run_hardened_with_only_their_env(run_transformer, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    argv = docker_argv("acme/quantizer:1", "/w/in", "/w/out", "/w/params.json", memory_mb=512,
                       pids_limit=64, env={"MODE": "fast"})
    for flag in ("--network=none", "--read-only", "--cap-drop=ALL",
                 "--security-opt=no-new-privileges", "--memory=512m", "--pids-limit=64"):
        assert flag in argv, flag
    assert argv[argv.index("--user") + 1] == "65534:65534"
    assert argv[argv.index("--tmpfs") + 1] == "/tmp"
    assert argv[-1] == "acme/quantizer:1" and "/w/in:/in:ro" in argv

    # The step itself: what it hands to docker (no daemon here, so the run is captured).
    seen: dict[str, object] = {}

    def fake_run(argv, *, cwd, env, identity, limits, timeout_s, contained):
        mounts = [argv[i + 1].split(":")[0] for i, arg in enumerate(argv) if arg == "-v"]
        in_dir, out = Path(mounts[0]), Path(mounts[1])
        seen.update(argv=argv, env=env, identity=identity, cwd=cwd,
                    out_owner=out.stat().st_uid, out_mode=out.stat().st_mode & 0o777)
        (out / "model.onnx").write_bytes((in_dir / "model.onnx").read_bytes())
        return sandbox.Completed(0, "", "", False)

    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(sandbox, "run_contained", fake_run)
    result = run_transformer("external", linear_onnx(tmp_path / "m.onnx"), image="acme/q:2",
                             env={"MODE": "fast"})
    assert result.path.read_bytes() == (tmp_path / "m.onnx").read_bytes()
    argv = seen["argv"]
    assert isinstance(argv, list) and argv[:2] == ["docker", "run"] and argv[-1] == "acme/q:2"
    assert {"--network=none", "--read-only", "--cap-drop=ALL",
            "--security-opt=no-new-privileges"} <= set(argv)
    passed = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-e"]
    assert sorted(passed) == ["MODE=fast", "TINYMLAAS_IN=/in", "TINYMLAAS_OUT=/out",
                              "TINYMLAAS_PARAMS=/params.json"]
    assert not any(secret in " ".join(argv) for secret in SECRETS.values())
    env = seen["env"]
    assert isinstance(env, dict) and not set(env) & set(SECRETS)
    assert seen["identity"] is None  # the client needs the daemon; the container drops root
    if ROOT:
        assert seen["out_owner"] == 65534
    else:
        assert seen["out_mode"] == 0o777
    assert not Path(str(seen["cwd"])).exists()
    with pytest.raises(Exception, match="image reference"):
        run_transformer("external", tmp_path / "m.onnx", image="--privileged")


# (g) nothing outlives a killed server ------------------------------------------------------


def test_a_killed_owner_takes_its_workers_and_commands_along(svc: Services, home: Path,
                                                             shared_dir: Path) -> None:
    marker = shared_dir / "pids"
    run_id = create(svc, external([step_python(), "-c", TREE, str(marker)]))
    svc.close()
    owner = subprocess.Popen([sys.executable, "-c", DRIVER, run_id],
                             env={**os.environ, "TINYMLAAS_HOME": str(home)},
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        command, child, grandchild = pids_in(marker)
        records = list((home / "procs").glob("*.json"))
        assert len(records) == 1
        record = json.loads(records[0].read_text())
        assert record["owner"]["pid"] == owner.pid
        worker = record["procs"][0][0]
        assert psutil.Process(command).ppid() == worker
        assert psutil.Process(grandchild).ppid() == worker  # the subreaper adopted it
        forkserver = psutil.Process(worker).ppid()
        assert forkserver != owner.pid and psutil.Process(forkserver).ppid() == owner.pid
    finally:
        owner.send_signal(signal.SIGKILL)
        owner.wait()
    tree = [forkserver, worker, command, child, grandchild]
    wait_until(lambda: all(gone(pid) for pid in tree), 15, "the owner's processes to die")
    # The next start finds the record of a dead owner and clears it up.
    scratch = Path(record["scratch"])
    assert scratch.exists() and records[0].exists()
    Services(Settings(home=home)).close()
    assert not records[0].exists() and not scratch.exists()


def test_startup_sweep_kills_only_orphans_of_dead_owners(home: Path) -> None:
    procs = home / "procs"
    procs.mkdir(parents=True)
    dead = subprocess.Popen(["true"])
    dead_start = process_start(dead.pid)
    dead.wait()
    sleepers = {name: subprocess.Popen(["sleep", "60"], start_new_session=True)
                for name in ("orphan", "reused", "kept")}
    owners = {"orphan": {"pid": dead.pid, "started": dead_start},
              "reused": {"pid": os.getpid(), "started": 1.0},  # our pid, another start: reused
              "kept": {"pid": os.getpid(), "started": process_start(os.getpid())}}
    for name, proc in sleepers.items():
        start = process_start(proc.pid)
        (procs / f"{name}.json").write_text(json.dumps({
            "name": f"{name}.json", "job_id": name, "scratch": None,
            "owner": {**owners[name], "host": socket.gethostname()},
            "procs": [[proc.pid, start]], "groups": [[proc.pid, start]]}))
    # Scratch directories name their owner: a dead one's go whatever home it used.
    dead_scratch, live_scratch = new_scratch_dir(), new_scratch_dir()
    (dead_scratch / OWNER_FILE).write_text(json.dumps(
        {"pid": dead.pid, "started": dead_start, "host": socket.gethostname()}))
    # Owners written by earlier versions (psutil's epoch start time) are still read.
    legacy_live, legacy_dead = new_scratch_dir(), new_scratch_dir()
    epoch = psutil.Process().create_time()
    for path, owner in ((legacy_live, {"pid": os.getpid(), "start": epoch}),
                        (legacy_dead, {"pid": os.getpid(), "start": epoch - 3600})):
        (path / OWNER_FILE).write_text(json.dumps({**owner, "host": socket.gethostname()}))
    try:
        services = Services(Settings(home=home))
        assert not dead_scratch.exists() and live_scratch.exists()
        assert legacy_live.exists() and not legacy_dead.exists()
        assert sorted(services.executor.swept) == ["orphan", "reused"]
        services.close()
        assert sleepers["orphan"].wait(5) == -signal.SIGKILL
        assert sleepers["reused"].wait(5) == -signal.SIGKILL
        assert sleepers["kept"].poll() is None
        assert sorted(p.name for p in procs.iterdir()) == ["kept.json"]
    finally:
        for proc in sleepers.values():
            proc.kill()
            proc.wait()
        shutil.rmtree(live_scratch, ignore_errors=True)
        shutil.rmtree(legacy_live, ignore_errors=True)


# (h) no tracebacks or server paths in what users see ---------------------------------------


def test_an_unexpected_error_shows_a_reference_not_a_traceback(
        svc: Services, home: Path, caplog: pytest.LogCaptureFixture) -> None:
    blob = svc.artifact_path(svc.get_dataset("digits").artifact_sha)
    blob.chmod(0o600)
    blob.write_bytes(b"no longer a dataset")  # numpy fails reading the calibration data
    pipeline = Pipeline.model_validate({"name": "broken", "evaluate": False,
                                        "steps": ["quantize-static"]})
    with caplog.at_level(logging.ERROR, logger="tinymlaas.steps"):
        run = svc.execute_run(svc.create_run(pipeline, model="linear", dataset="digits").id)
    step = run.steps[0]
    assert run.status is RunStatus.failed and step.status is StepStatus.failed
    shown = "\n".join([step.log or "", step.error or "", run.error or ""])
    assert "Traceback" not in shown and 'File "' not in shown
    for private in (str(home), "/work", "site-packages", str(Path(sys.prefix))):
        assert private not in shown, private
    assert "the details are in the server log" in (step.error or "")
    ref = (step.error or "").split("reference ")[1].split(";")[0]
    assert f"error {ref}: ValueError" in (step.log or "")
    logged = [r.getMessage() for r in caplog.records if r.name == "tinymlaas.steps"]
    assert any(ref in message and "Traceback" in message for message in logged), logged
    stored = json.dumps(svc.get_run(run.id).model_dump(mode="json"))
    assert "Traceback" not in stored


def test_messages_users_see_lose_server_paths() -> None:
    message = ("[Errno 2] No such file or directory: '/srv/tinymlaas/home/work/run-1/x.npz' "
               "(from /opt/venv/lib/python3.11/site-packages/numpy/lib/npyio.py)")
    shown = sandbox.public_message(message)
    assert shown == "[Errno 2] No such file or directory: 'x.npz' (from npyio.py)"
    assert sandbox.public_message("ratio 3/4 at step 2") == "ratio 3/4 at step 2"
