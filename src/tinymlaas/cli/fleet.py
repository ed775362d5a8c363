"""``tinymlaas fleet`` and ``tinymlaas deploy``: enroll devices, roll releases out to them
in waves, follow, pause, resume, cancel and roll back rollouts, and run inputs on a device.

Against a server (``--server``) every command goes through the SDK; without one it works
on the local data directory's database (a ``tinymlaas serve`` on the same home serves the
devices).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from tinymlaas.cli.render import console, fmt, print_json, status, table
from tinymlaas.domain.fleet import FleetDevice, InferenceJob, Rollout, device_health

__all__ = ["deploy_command", "fleet_app"]

fleet_app = typer.Typer(no_args_is_help=True, help="Physical devices, releases and "
                        "over-the-air rollouts.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProjectOpt = Annotated[str | None, typer.Option("--project", "-p", help="Project id.")]
RolloutArg = Annotated[str, typer.Argument(help="Rollout id.")]


class LocalFleet:
    """The SDK's fleet methods on the local database (no user: every project)."""

    def __init__(self) -> None:
        from tinymlaas.service import Services
        from tinymlaas.service.fleet import Fleet

        self.services = Services()
        self.fleet = Fleet(self.services)

    def close(self) -> None:
        self.services.close()

    def _device(self, ref: str) -> FleetDevice:
        return self.fleet.store.get_device(ref)

    def enroll_device(self, name: str, *, groups: list[str], profile: str | None,
                      tags: dict[str, str], project: str | None) -> dict[str, Any]:
        device, code = self.fleet.enroll(project or "default", name, groups=groups,
                                         profile=profile, tags=tags)
        return {**device.model_dump(mode="json"), "enrollment_code": code}

    def renew_enrollment(self, ref: str) -> dict[str, Any]:
        device = self._device(ref)
        code = self.fleet.renew_code(device)
        return {**self._device(device.id).model_dump(mode="json"), "enrollment_code": code}

    def list_fleet(self, project: str | None = None,
                   group: str | None = None) -> list[FleetDevice]:
        projects = [project] if project else [p.id for p in self.services.list_projects()]
        return self.fleet.store.list_devices(projects, group)

    def fleet_device(self, ref: str) -> dict[str, Any]:
        device = self._device(ref)
        return {**device.model_dump(mode="json"),
                "history": [e.model_dump(mode="json") for e in self.fleet.history(device)],
                "inference": [j.model_dump(mode="json")
                              for j in self.fleet.jobs(device)]}

    def revoke_device(self, ref: str) -> FleetDevice:
        return self.fleet.revoke(self._device(ref))

    def deploy(self, group: str, *, run: str | None = None, release: str | None = None,
               waves: list[int] | None = None, error_threshold: float | None = None,
               **options: Any) -> Rollout:
        if release is not None:
            chosen = self.fleet.store.get_release(release)
        else:
            found = self.services.get_run(run or "")
            chosen = self.fleet.create_release(found.project, found, **{
                k: v for k, v in options.items() if v is not None})
        return self.fleet.deploy(chosen.project, chosen, group, waves=waves,
                                 error_threshold=0.2 if error_threshold is None
                                 else error_threshold)

    def rollout(self, ref: str) -> Rollout:
        return self.fleet.store.get_rollout(ref)

    def list_rollouts(self, project: str | None = None) -> list[Rollout]:
        projects = [project] if project else [p.id for p in self.services.list_projects()]
        return self.fleet.store.list_rollouts(projects)

    def rollout_action(self, ref: str, action: str) -> Rollout:
        return getattr(self.fleet, action)(self.rollout(ref))

    def request_inference(self, device: str, dataset: str | None = None, limit: int = 100, *,
                          samples: Path | None = None) -> InferenceJob:
        from tinymlaas.service.fleet import read_npz

        found = self._device(device)
        if samples is not None:
            arrays = read_npz(samples.read_bytes(), "samples must be an NPZ of arrays")
            return self.fleet.request_inference(found, None, arrays, limit=limit)
        return self.fleet.request_inference(found, self.services.get_dataset(dataset or "").id,
                                            limit=limit)

    def inference_job(self, job_id: str) -> InferenceJob:
        return self.fleet.store.get_job(job_id)


def _client() -> Any:
    from tinymlaas.config import get_settings

    settings = get_settings()
    if settings.server_url:
        from tinymlaas.cli.remote import RemoteServices

        return RemoteServices(settings.server_url, settings.token).client
    return LocalFleet()


def _dump(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _show_rollout(rollout: Rollout, as_json: bool) -> None:
    if as_json:
        print_json(rollout.model_dump(mode="json"))
        return
    console.print(f"rollout [bold]{rollout.id}[/] of release v{rollout.version} to group "
                  f"[bold]{rollout.group}[/]: {status(rollout.state.value)}  waves "
                  f"{','.join(map(str, rollout.waves))}  ({rollout.message})")
    console.print(table("devices", ["device", "wave", "state", "stage", "message"],
                        [[a.device_name, str(a.wave + 1), status(a.state.value), a.stage or "",
                          a.message] for a in rollout.actions]))


@fleet_app.command("enroll")
def enroll(name: Annotated[str, typer.Argument(help="The device's name in the project.")],
           group: Annotated[list[str] | None, typer.Option("--group", "-g",
                                                           help="A group (repeatable).")] = None,
           profile: Annotated[str | None, typer.Option(help="Device profile from the catalog "
                                                       "(`tinymlaas devices list`).")] = None,
           tag: Annotated[list[str] | None, typer.Option(help="KEY=VALUE (repeatable).")] = None,
           renew: Annotated[bool, typer.Option("--renew", help="A new code for an existing "
                                               "device (its credential stops working).")]
           = False,
           project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Add a device and print its one-time enrollment code, for `tinymlaas agent --token`."""
    pairs = [t.partition("=") for t in tag or []]
    if any(not key or not sep for key, sep, _ in pairs):
        raise typer.BadParameter("tags are KEY=VALUE", param_hint="--tag")
    client = _client()
    try:
        if renew:
            enrolled = _dump(client.renew_enrollment(name))
        else:
            enrolled = _dump(client.enroll_device(name, groups=group or [], profile=profile,
                                                  tags={k: v for k, _, v in pairs},
                                                  project=project))
    finally:
        client.close()
    if as_json:
        print_json(enrolled)
        return
    console.print(f"device [bold]{enrolled['name']}[/] ({enrolled['id']}) in groups "
                  f"{', '.join(enrolled['groups']) or '-'}")
    console.print(f"enrollment code (valid 24 hours, shown once): "
                  f"[bold]{enrolled['enrollment_code']}[/]")
    console.print("on the device: tinymlaas agent --server URL --token CODE --root DIR")


@fleet_app.command("list")
def list_devices(group: Annotated[str | None, typer.Option(help="Only this group.")] = None,
                 project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The devices: installed version, last seen, health."""
    client = _client()
    try:
        devices = client.list_fleet(project, group)
    finally:
        client.close()
    if as_json:
        print_json([d.model_dump(mode="json") for d in devices])
        return
    console.print(table("devices", ["name", "id", "groups", "version", "health", "last seen"],
                        [[d.name, d.id, ",".join(d.groups), fmt(d.version, "d"),
                          status(device_health(d)),
                          d.last_seen_at.strftime("%Y-%m-%d %H:%M:%S") if d.last_seen_at
                          else "never"] for d in devices]))


@fleet_app.command("show")
def show_device(ref: Annotated[str, typer.Argument(help="Device id or name.")],
                as_json: JsonOpt = False) -> None:
    """A device with its history, newest first."""
    client = _client()
    try:
        detail = _dump(client.fleet_device(ref))
    finally:
        client.close()
    if as_json:
        print_json(detail)
        return
    console.print(f"[bold]{detail['name']}[/] ({detail['id']})  version "
                  f"{detail['version'] or '-'}  health {detail['health']}")
    console.print(table("history", ["at", "version", "stage", "message"],
                        [[e["at"][:19], str(e["version"] or ""), e["stage"], e["message"]]
                         for e in detail["history"]]))


@fleet_app.command("revoke")
def revoke(ref: Annotated[str, typer.Argument(help="Device id or name.")],
           as_json: JsonOpt = False) -> None:
    """Revoke a device's credential; its pending updates are cancelled."""
    client = _client()
    try:
        device = client.revoke_device(ref)
    finally:
        client.close()
    if as_json:
        print_json(device.model_dump(mode="json"))
    else:
        console.print(f"revoked {device.name} ({device.id})")


@fleet_app.command("infer")
def infer(device: Annotated[str, typer.Argument(help="Device id or name.")],
          dataset: Annotated[str | None, typer.Option(help="Dataset whose test split is "
                                                      "sent.")] = None,
          samples: Annotated[Path | None, typer.Option(help="Or an NPZ of your own samples: "
                                                       "one array per model input.")] = None,
          limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many "
                                             "samples.")] = 100,
          wait: Annotated[float, typer.Option(help="Seconds to wait for the device's "
                                              "answer (0: do not wait).")] = 0,
          as_json: JsonOpt = False) -> None:
    """Run a dataset's test split on a device's installed release; the device reports
    outputs and its own latency."""
    import time

    if (dataset is None) == (samples is None):
        raise typer.BadParameter("give --dataset or --samples")
    client = _client()
    try:
        job = client.request_inference(device, dataset, limit, samples=samples)
        deadline = time.monotonic() + wait
        while job.state not in ("done", "failed") and time.monotonic() < deadline:
            time.sleep(1)
            job = client.inference_job(job.id)
    finally:
        client.close()
    if as_json:
        print_json(job.model_dump(mode="json"))
        return
    console.print(f"inference job {job.id}: {job.samples} samples, {job.state}")
    for key, value in job.metrics.items():
        console.print(f"  {key}: {value:.4g}")


@fleet_app.command("rollouts")
def rollouts(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Rollouts, newest first."""
    client = _client()
    try:
        found = client.list_rollouts(project)
    finally:
        client.close()
    if as_json:
        print_json([r.model_dump(mode="json") for r in found])
        return
    console.print(table("rollouts", ["id", "version", "group", "state", "devices", "message"],
                        [[r.id, str(r.version), r.group, status(r.state.value),
                          ", ".join(f"{n} {s}" for s, n in sorted(r.counts.items())),
                          r.message] for r in found]))


@fleet_app.command("rollout")
def rollout(ref: RolloutArg, as_json: JsonOpt = False) -> None:
    """A rollout with each device's state."""
    client = _client()
    try:
        _show_rollout(client.rollout(ref), as_json)
    finally:
        client.close()


def _rollout_action(action: str, doc: str) -> None:
    def command(ref: RolloutArg, as_json: JsonOpt = False) -> None:
        client = _client()
        try:
            _show_rollout(client.rollout_action(ref, action), as_json)
        finally:
            client.close()

    command.__doc__ = doc
    fleet_app.command(action)(command)


_rollout_action("pause", "Pause a rollout: nothing new is offered.")
_rollout_action("resume", "Resume a paused rollout (past its failure threshold too).")
_rollout_action("cancel", "Cancel a rollout: offers not yet taken are withdrawn.")
_rollout_action("rollback", "Roll the group back to its previous release (a new, higher "
                "version with the previous files); prints the new rollout.")


def deploy_command(
    run: Annotated[str, typer.Argument(help="A finished run whose pipeline ends in an "
                                       "installer (e.g. package-python).")],
    group: Annotated[str, typer.Option("--group", "-g", help="The devices' group.")],
    waves: Annotated[str, typer.Option(help="Cumulative percentages of the group, e.g. "
                                       "10,100.")] = "100",
    error_threshold: Annotated[float, typer.Option(min=0, max=1, help="Failure rate of a "
                                                   "wave that pauses the rollout.")] = 0.2,
    max_latency_ms: Annotated[float | None, typer.Option(help="Latency bound of the "
                                                         "devices' health check.")] = None,
    atol: Annotated[float | None, typer.Option(help="Output tolerance of the health "
                                               "check.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Release a run's installer output (signed) and roll it out to a group in waves."""
    from tinymlaas.service.fleet import check_waves

    try:
        wave_list = check_waves([int(w) for w in waves.split(",") if w.strip()])
    except ValueError:
        raise typer.BadParameter("waves are comma-separated percentages, e.g. 10,100") \
            from None
    client = _client()
    try:
        created = client.deploy(group, run=run, waves=wave_list,
                                error_threshold=error_threshold,
                                max_latency_ms=max_latency_ms, atol=atol)
    finally:
        client.close()
    _show_rollout(created, as_json)
