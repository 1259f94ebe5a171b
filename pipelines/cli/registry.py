"""``leadscore models``: list registered versions, promote, roll back."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from pipelines.cli.common import app, console, err_console, user_errors
from pipelines.cli.output import fmt_value, print_decision

models_app = typer.Typer(help="The model registry: list versions, promote, roll back.", no_args_is_help=True)
app.add_typer(models_app, name="models")


@contextmanager
def _registry() -> Iterator[Any]:
    from models.package.registry import ModelRegistry, RegistryError
    from models.package.tracking import TrackingError, configure_mlflow
    from pipelines.config import load_config
    from pipelines.settings import get_settings

    settings = get_settings()
    try:
        target = configure_mlflow(settings.tracking_uri, settings.artifact_root)
        yield ModelRegistry(target.client(), settings.model_name, primary_metric=load_config(None).train.primary_metric)
    except (RegistryError, TrackingError, ValueError) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc


@models_app.command("list")
def models_list() -> None:
    """Registered versions with their aliases and primary metric."""
    with _registry() as registry:
        versions = registry.list_versions()
    table = Table(title=f"registered model '{registry.name}'")
    for column in ("version", "aliases", "created", registry.primary_metric, "run"):
        table.add_column(column)
    for v in versions:
        table.add_row(
            str(v.version),
            ", ".join(v.aliases) or "-",
            v.created.strftime("%Y-%m-%d %H:%M"),
            fmt_value(v.primary_value),
            v.run_id or "-",
        )
    console.print(table if versions else f"no versions of '{registry.name}' yet: run leadscore train")


@models_app.command("promote")
def models_promote(
    version: Annotated[int, typer.Argument(help="Registered version to make champion.")],
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data directory to rebuild the test snapshots from (compare on the same rows)."),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Promote even if a guardrail refuses.")] = False,
    config: Annotated[
        Path | None, typer.Option("--config", help="Modelling config YAML (its promotion: guardrails).")
    ] = None,
) -> None:
    """Manual promotion under the same guardrails and comparison report as automatic promotion."""
    evaluate = None
    if data is not None:
        from features.partitioned import load_any_history
        from models.package.promotion import history_evaluator

        with user_errors():
            evaluate = history_evaluator(load_any_history(data))
    from pipelines.config import load_config

    with user_errors():
        policy = load_config(config).train.promotion
    with _registry() as registry:
        decision = registry.promote(version, evaluate=evaluate, policy=policy, force=force)
    print_decision(decision)
    if not decision.promoted:
        raise typer.Exit(code=1)


@models_app.command("rollback")
def models_rollback() -> None:
    """Move the champion alias back to the previous champion."""
    with _registry() as registry:
        result = registry.rollback()
    console.print(f"champion of '{result.name}': version {result.from_version} -> {result.to_version}")
