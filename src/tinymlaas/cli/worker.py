"""``tinymlaas worker``: a site's worker (see :mod:`tinymlaas.worker.site`).

Imports nothing heavy at module level, so ``tinymlaas --help`` stays fast.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated

import typer

from tinymlaas.errors import InvalidInputError

__all__ = ["worker_command"]


def worker_command(
    server: Annotated[str, typer.Option("--server", help="The Studio's URL "
                                        "(http://host:port).")],
    site: Annotated[str, typer.Option("--site", help="The site's name.")],
    token: Annotated[str, typer.Option("--token", help="The site's token "
                                       "(`tinymlaas sites create NAME --json` shows it "
                                       "once); default: TINYMLAAS_SITE_TOKEN.",
                                       envvar="TINYMLAAS_SITE_TOKEN")],
    data_root: Annotated[Path, typer.Option("--data-root", help="The site's data directory "
                                            "(site datasets are read under it).")],
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, max=64,
                                             help="Steps run at once.")] = 1,
    broker: Annotated[str | None, typer.Option(
        "--broker", envvar="TINYMLAAS_BROKER_URL", help="The broker's URL, when the "
        "site reaches it at another address than the server advertises.")] = None,
    work_dir: Annotated[Path | None, typer.Option(
        "--work-dir", help="The worker's cache of inputs and its steps' files (default: "
        "DATA_ROOT/.tinymlaas-worker).")] = None,
) -> None:
    """Run a site's steps here: take them from the site's queue, fetch their inputs from
    the server through signed URLs, send back results and outputs. Outbound connections
    only (the server's API and the broker)."""
    from tinymlaas.worker.site import SiteWorker

    if not re.match(r"^https?://[^\s/]+", server):
        raise InvalidInputError(f"--server {server!r} is not an http(s) URL")
    if not data_root.is_dir():
        raise InvalidInputError(f"--data-root {data_root} is not a directory")
    worker = SiteWorker(server, site, token, data_root, work_dir=work_dir,
                        concurrency=concurrency, broker_url=broker)
    config = worker.connect()
    typer.echo(f"tinymlaas worker {worker.worker_id} of site {site}: queue {config['queue']}, "
               f"pid {os.getpid()}", err=True)
    worker.run()
