"""The `shardplan` command line (typer): placement commands in `plan`, executors in `executors`,
forecasting in `forecast`; `render` draws the tables they print."""
from __future__ import annotations

import typer  # noqa: E402

from shardplan.planner.cli import admit as admit_commands  # noqa: E402
from shardplan.planner.cli import common  # noqa: F401  (first: --time-limit counts from its import)
from shardplan.planner.cli import executors as executor_commands  # noqa: E402
from shardplan.planner.cli import forecast as forecast_commands  # noqa: E402
from shardplan.planner.cli import plan as plan_commands  # noqa: E402
from shardplan.planner.cli import report as report_commands  # noqa: E402
from shardplan.planner.cli import route as route_commands  # noqa: E402
from shardplan.planner.cli import whatif as whatif_commands  # noqa: E402

app = typer.Typer(help="shardplan: nightly planner that shards VM requests across a heterogeneous fleet.",
                  no_args_is_help=True, add_completion=False)


def _version(show: bool) -> None:
    if show:
        from shardplan.planner.engine import package_version

        typer.echo(f"shardplan {package_version()}")
        raise typer.Exit()


@app.callback()
def main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                      help="print the version and exit")) -> None:
    """shardplan: nightly planner that shards VM requests across a heterogeneous fleet."""
    common.start_invocation()


plan_commands.register(app)
executor_commands.register(app)
forecast_commands.register(app)
whatif_commands.register(app)
report_commands.register(app)
route_commands.register(app)
admit_commands.register(app)

if __name__ == "__main__":
    app()
