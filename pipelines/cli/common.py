"""The ``leadscore`` Typer app and what its commands share: consoles, clear user errors, progress."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

app = typer.Typer(
    name="leadscore",
    help="Predictive lead scoring: point-in-time features, calibrated readiness and buying stage, MLflow, Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=False)
err_console = Console(stderr=True)


#: Commands that keep the priority they were started with: the endpoint, and ``deploy`` (its flow runs
#: lower their own priority, see :func:`pipelines.flow_parts.lower_batch_priority`).
FULL_PRIORITY_COMMANDS = frozenset({"serve", "deploy"})


@app.callback()
def _main(ctx: typer.Context) -> None:
    """Predictive lead scoring for the marketing -> sales handoff."""
    from pipelines.runtime import apply_runtime_defaults, install_termination_handlers, lower_cpu_priority
    from pipelines.settings import SettingsError, get_settings

    # First, before any heavy import: user_errors() alone imports pandas, scikit-learn and SciPy (1.5 s of
    # CPU), which a job next to the endpoint must not spend at full priority. A bad LEADSCORE_* value is a
    # clear error for every command (serve included), before it starts.
    try:
        settings = get_settings()
    except SettingsError as exc:
        from rich.markup import escape

        err_console.print(f"[bold red]error:[/] {escape(str(exc))}")
        raise typer.Exit(code=2) from exc
    if ctx.invoked_subcommand not in FULL_PRIORITY_COMMANDS:
        lower_cpu_priority(settings.batch_nice)
    apply_runtime_defaults()
    install_termination_handlers()


def guard_prefect() -> None:
    """Before a flow runs: Prefect's temporary API server must end with this command (SIGKILL too)."""
    from pipelines.runtime import guard_ephemeral_server

    guard_ephemeral_server()


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn expected failures (bad data, bad config) into a clear message and exit code 2."""
    from features.contract import ContractError
    from pipelines.config import ConfigError

    try:
        yield
    except (ContractError, ConfigError, ValueError, FileNotFoundError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc


def progress_display() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def parse_days(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    from features.snapshots import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def run_with_status(message: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` under a pulsing progress bar with elapsed time (its duration is not known up front)."""
    with progress_display() as progress:
        bar = progress.add_task(message, total=None)
        value = fn()
        progress.update(bar, total=1, completed=1)
    return value


# --------------------------------------------------------------------------------------------


def cluster_option(value: str | None) -> str | None:
    """``--cluster``, else ``LEADSCORE_DASK_ADDRESS``, checked (no Dask import here)."""
    if value is None:
        from pipelines.settings import get_settings

        value = get_settings().dask_address
    if value is None:
        return None
    from pipelines.dask_runner import parse_cluster

    try:
        parse_cluster(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--cluster") from exc
    return value


def resolve_cluster(value: str | None, data: Path) -> str | None:
    """The cluster to run on for ``--data``: ``--cluster``, else ``LEADSCORE_DASK_ADDRESS`` (partitioned data only).

    ``LEADSCORE_DASK_ADDRESS`` alone leaves plain data on this machine, as before; an explicit ``--cluster``
    on plain data is refused (it needs a partitioned data directory).
    """
    from features.partitioned import is_partitioned

    explicit = value is not None
    cluster = cluster_option(value)
    partitioned = is_partitioned(data)
    if cluster is not None and not partitioned and not explicit:
        return None
    if cluster is not None and not partitioned:
        raise typer.BadParameter(
            f"{data} is not partitioned: --cluster needs a partitioned data directory "
            "(leadscore generate/import --partitions N)",
            param_hint="--cluster",
        )
    return cluster
