"""``tinymlaas agent``: the device agent's command line.

Imports nothing heavy at module level, so ``tinymlaas --help`` stays fast and the agent
runs on a device without the server stack.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

__all__ = ["agent", "app"]

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _err(message: str) -> None:
    print(f"agent: {message}", file=sys.stderr, flush=True)


@app.command()
def agent(
    root: Annotated[Path, typer.Option("--root", help="The agent's directory: identity, state, "
                                       "downloads and the A/B slots.")],
    server: Annotated[str | None, typer.Option(
        "--server", help="The Studio's URL (kept in agent.json after enrollment).")] = None,
    token: Annotated[str | None, typer.Option(
        "--token", help="The one-time enrollment code, on the first run; later runs read "
        "the device's credential from agent.json.")] = None,
    once: Annotated[bool, typer.Option("--once", help="Poll once, act on the answer, "
                                       "exit.")] = False,
    gateway: Annotated[str | None, typer.Option(
        "--gateway", help="Install signed-image releases on the MCU at this address "
        "(gateway mode).")] = None,
    health_timeout: Annotated[float, typer.Option(
        "--health-timeout", min=1.0, help="Seconds the health check may take.")] = 120.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary of what "
                                          "happened.")] = False,
) -> None:
    """Run the over-the-air update agent of a Linux device or gateway."""
    from tinymlaas.agent.ddi import enroll
    from tinymlaas.agent.runner import Agent
    from tinymlaas.agent.store import AgentConfig, Layout, load_config, save_config
    from tinymlaas.errors import InvalidInputError, TinymlaasError

    layout = Layout(root.expanduser().absolute())
    try:
        config = load_config(layout)
        if config is None:
            if not server or not token:
                raise InvalidInputError(f"{layout.config} does not exist: give --server and "
                                        "--token with the device's enrollment code")
            layout.create()
            enrollment = enroll(server, token)
            config = AgentConfig(server=server.rstrip("/"),
                                 **enrollment.model_dump(mode="json"))
            save_config(layout, config)
            _err(f"enrolled as {config.name} ({config.controller_id}) in project "
                 f"{config.tenant}")
        else:
            if token:
                _err(f"already enrolled as {config.controller_id}; --token is not used "
                     f"(remove {layout.config} to enroll again)")
            if server and server.rstrip("/") != config.server:
                config = config.model_copy(update={"server": server.rstrip("/")})
                save_config(layout, config)
        runner = Agent(layout, config, gateway=gateway, health_timeout_s=health_timeout,
                       log=_err)
        try:
            outcome = runner.run(once=once)
        finally:
            runner.close()
    except TinymlaasError as exc:
        _err(exc.message)
        if as_json:
            print(json.dumps({"outcome": "error", "error": exc.to_dict()}))
        raise typer.Exit(exc.exit_code) from None
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if as_json:
        print(json.dumps(outcome.to_dict()))


def main() -> None:
    app()


if __name__ == "__main__":
    main()
