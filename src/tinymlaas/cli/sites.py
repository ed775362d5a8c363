"""``tinymlaas sites``: create, list and delete the sites where a project's steps run on
the customer's machines.

Against a server (``--server``) every command goes through the SDK; without one it works
on the local data directory's database (a ``tinymlaas serve`` on the same home serves the
site endpoints).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from tinymlaas.cli.render import console, print_json, status, table
from tinymlaas.domain.sites import Site, worker_alive

__all__ = ["sites_app"]

sites_app = typer.Typer(no_args_is_help=True, help="Sites: where steps run on your own "
                        "machines, next to data that never leaves them.")
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
ProjectOpt = Annotated[str | None, typer.Option("--project", "-p", help="Project id.")]
NameArg = Annotated[str, typer.Argument(help="The site's name (or id).")]


class LocalSites:
    """The SDK's site methods on the local database (no user: every project)."""

    def __init__(self) -> None:
        from tinymlaas.service import Services
        from tinymlaas.service.sites import Sites

        self.services = Services()
        self.sites = Sites(self.services)

    def close(self) -> None:
        self.services.close()

    def _projects(self, project: str | None) -> list[str]:
        return [project] if project else [p.id for p in self.services.list_projects()]

    def create_site(self, name: str, *, project: str | None = None) -> dict[str, Any]:
        if project is not None and project not in self._projects(None):
            from tinymlaas.errors import NotFoundError

            raise NotFoundError(f"project {project!r} not found",
                                {"kind": "project", "ref": project})
        site, token = self.sites.create(project or "default", name)
        return {**site.model_dump(mode="json"), "token": token}

    def list_sites(self, project: str | None = None) -> list[Site]:
        return self.sites.list(self._projects(project))

    def get_site(self, name: str, *, project: str | None = None) -> Site:
        return self.sites.get(name, self._projects(project))

    def delete_site(self, name: str, *, project: str | None = None) -> None:
        self.sites.delete(self.get_site(name, project=project))


def _client() -> Any:
    from tinymlaas.config import get_settings

    settings = get_settings()
    if settings.server_url:
        from tinymlaas.cli.remote import RemoteServices

        return RemoteServices(settings.server_url, settings.token).client
    return LocalSites()


def _dump(value: Any) -> dict[str, Any]:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _ago(when: datetime, now: datetime) -> str:
    seconds = max(0, int((now - when).total_seconds()))
    return f"{seconds}s ago" if seconds < 120 else f"{seconds // 60} min ago" \
        if seconds < 7200 else when.strftime("%Y-%m-%d %H:%M:%S")


def _rows(sites: list[Site]) -> list[list[str]]:
    now = datetime.now(UTC)
    rows = []
    for site in sites:
        if not site.workers:
            rows.append([site.name, site.project, "-", "-", "no worker yet", "-"])
        for worker in site.workers:
            state = "alive" if worker_alive(worker, now) else "gone"
            rows.append([site.name, site.project, f"{worker.id} ({worker.hostname})",
                         status(state), _ago(worker.last_heartbeat, now),
                         ", ".join(worker.running_steps) or "-"])
    return rows


@sites_app.command("create")
def create(name: Annotated[str, typer.Argument(help="The site's name in the project.")],
           project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Create a site and print its token (shown once) for the site's workers."""
    client = _client()
    try:
        created = _dump(client.create_site(name, project=project))
    finally:
        client.close()
    if as_json:
        print_json({"name": created["name"], "token": created["token"],
                    "id": created["id"], "project": created["project"]})
        return
    console.print(f"site [bold]{created['name']}[/] ({created['id']}) in project "
                  f"{created['project']}")
    console.print(f"site token (shown once): [bold]{created['token']}[/]")


@sites_app.command("list")
def list_sites(project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """The sites with their workers: last heartbeat and the steps they run."""
    client = _client()
    try:
        sites = client.list_sites(project)
    finally:
        client.close()
    if as_json:
        print_json([s.model_dump(mode="json") for s in sites])
        return
    console.print(table("sites", ["site", "project", "worker", "state", "last heartbeat",
                                  "running steps"], _rows(sites)))


@sites_app.command("show")
def show(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """One site with its workers, newest heartbeat first."""
    client = _client()
    try:
        site = client.get_site(name, project=project)
    finally:
        client.close()
    if as_json:
        print_json(site.model_dump(mode="json"))
        return
    console.print(table(f"site {site.name} ({site.id})", ["site", "project", "worker", "state",
                                                          "last heartbeat", "running steps"],
                        _rows([site])))


@sites_app.command("delete")
def delete(name: NameArg, project: ProjectOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a site; its token stops working at once."""
    client = _client()
    try:
        client.delete_site(name, project=project)
    finally:
        client.close()
    if as_json:
        print_json({"deleted": name})
    else:
        console.print(f"deleted site {name}")
