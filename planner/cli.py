"""The `shardplan` command line (typer). Commands live in planner/cli_*.py modules."""
from __future__ import annotations

import typer

app = typer.Typer(help="shardplan: nightly planner that shards VM requests across a heterogeneous fleet.",
                  no_args_is_help=True, add_completion=False)

from planner import cli_plan  # noqa: E402


def _version(show: bool) -> None:
    if show:
        from planner.engine import package_version

        typer.echo(f"shardplan {package_version()}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    """shardplan: nightly planner that shards VM requests across a heterogeneous fleet."""


cli_plan.register(app)

from planner import cli_executors  # noqa: E402
cli_executors.register(app)

from planner import cli_forecast; cli_forecast.register(app)  # noqa: E402,E702

if __name__ == "__main__":
    app()
