"""The ``leadscore`` command line.

Heavy imports (pandas, Prefect, MLflow) happen inside the commands so that ``--help`` is instant
and importing this module has no side effects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

app = typer.Typer(
    name="leadscore",
    help="Predictive lead scoring: point-in-time features, calibrated readiness and buying stage, MLflow, Prefect.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
console = Console(stderr=False)
err_console = Console(stderr=True)


@app.callback()
def _main() -> None:
    """Predictive lead scoring for the marketing -> sales handoff."""
    from pipelines.runtime import apply_runtime_defaults, install_termination_handlers

    apply_runtime_defaults()
    install_termination_handlers()


def _guard_prefect() -> None:
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


def _progress() -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


def _days(value: str | None, option: str) -> int | None:
    if value is None:
        return None
    from features.snapshots import parse_duration

    try:
        return parse_duration(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint=option) from exc


def _run_with_status(message: str, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` under a pulsing progress bar with elapsed time (its duration is not known up front)."""
    with _progress() as progress:
        bar = progress.add_task(message, total=None)
        value = fn()
        progress.update(bar, total=1, completed=1)
    return value


# --------------------------------------------------------------------------------------------
@app.command()
def generate(
    out: Annotated[Path, typer.Option("--out", help="Directory to write the data set into.")],
    leads: Annotated[int, typer.Option("--leads", min=1, help="Number of leads to simulate.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same data).")] = 7,
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv.")] = "parquet",
    drift_after: Annotated[
        str | None,
        typer.Option(
            "--drift-after",
            help="From this date (YYYY-MM-DD, UTC) prospects engage differently: fewer e-mail opens and pricing "
            "views, more (paid) web visits. Outcomes stay the same; for testing `leadscore monitor`.",
        ),
    ] = None,
    campaign_effect_scale: Annotated[
        float,
        typer.Option(
            "--campaign-effect-scale",
            min=0.0,
            max=20.0,
            help="Multiplies every campaign's true effect (0 = placebo world: no campaign has any effect).",
        ),
    ] = 1.0,
    partitions: Annotated[
        int | None,
        typer.Option("--partitions", min=1, help="Write a data directory partitioned by lead into N parts (Parquet)."),
    ] = None,
) -> None:
    """Simulate a realistic B2B funnel: leads, activities, stage history and the ground truth."""
    if fmt not in ("parquet", "csv"):
        raise typer.BadParameter("expected parquet or csv", param_hint="--format")
    import datetime as dt

    if partitions is not None and fmt != "parquet":
        raise typer.BadParameter("partitioned data directories are Parquet", param_hint="--partitions")
    from features.simulator import generate as simulate
    from features.simulator.config import SimulatorConfig

    try:
        config = SimulatorConfig(
            campaign_effect_scale=campaign_effect_scale,
            drift_after=dt.date.fromisoformat(drift_after) if drift_after is not None else None,
        )
    except ValueError as exc:
        raise typer.BadParameter(
            f"{drift_after!r}: expected a date YYYY-MM-DD inside the simulated span ({exc})",
            param_hint="--drift-after",
        ) from exc

    target = out if partitions is None else _staging_dir(out)
    try:
        with user_errors(), _progress() as progress:
            bar = progress.add_task("simulating leads", total=leads)
            summary = simulate(
                leads,
                seed,
                target,
                config=config,
                fmt=fmt,  # type: ignore[arg-type]
                progress=lambda done, total: progress.update(bar, completed=done, total=total),
            )
            if partitions is not None:
                from features.partitioned import partition_data_dir

                _run_with_status(
                    f"partitioning by lead into {partitions}", lambda: partition_data_dir(target, out, partitions)
                )
    finally:
        if partitions is not None:
            import shutil

            shutil.rmtree(target, ignore_errors=True)
    console.print(f"[green]wrote[/] {out}" + (f" ({partitions} partitions by lead)" if partitions else ""))
    console.print(str(summary), markup=False)


def _staging_dir(out: Path) -> Path:
    """A fresh directory beside ``out`` for a plain data directory that is partitioned into ``out``."""
    import uuid

    out.parent.mkdir(parents=True, exist_ok=True)
    return out.with_name(f".{out.name}.staging-{uuid.uuid4().hex[:8]}")


@app.command()
def effects(
    data: Annotated[Path, typer.Option("--data", help="Data directory (leads, activities, stage_history).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the table: .csv or .parquet (chosen by the suffix).")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Handoff policy YAML whose actions to estimate (default: packaged).")
    ] = None,
    horizon: Annotated[
        str | None, typer.Option("--horizon", help="Outcome horizon, e.g. 90d (default: config).")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Modelling config YAML.")] = None,
) -> None:
    """Estimated effect of each campaign and action on conversion (doubly robust, checked against confounding)."""
    if out is not None and out.suffix.lower() not in (".csv", ".parquet"):
        raise typer.BadParameter("write the table as .csv or .parquet", param_hint="--out")
    from features import validation
    from models.explain.effects import ActionSpec, EffectEstimator, write_effects
    from pipelines.config import load_config
    from serving.policy import load_policy

    with user_errors():
        cfg = load_config(config)
        actions = [ActionSpec(a.name, a.activity_type) for a in load_policy(policy).next_best_actions]
        history = _run_with_status("validating", lambda: validation.load_history(data).history)
        est = EffectEstimator(actions, feature_config=cfg.features, horizon_days=_days(horizon, "--horizon"))
        table = _run_with_status("estimating effects", lambda: est.fit(history).table_)
        if out is not None:
            write_effects(table, out)
    _print_effects(table, est.horizon_days_)
    if out is not None:
        console.print(f"[green]wrote[/] {out}")


def _print_effects(table: Any, horizon_days: int) -> None:
    import pandas as pd

    def pp(value: Any) -> str:
        return "" if pd.isna(value) else f"{100 * value:+.1f}"

    rich_table = Table(title=f"estimated effect on conversion within {horizon_days} days (percentage points)")
    for col in (
        "campaign",
        "action",
        "exposed",
        "comparable unexposed",
        "estimate",
        "95% interval",
        "naive",
        "evidence",
    ):
        rich_table.add_column(col)
    for r in table[table["segment"] == "all"].itertuples(index=False):
        interval = "" if pd.isna(r.ci_low) else f"{pp(r.ci_low)} .. {pp(r.ci_high)}"
        rich_table.add_row(
            str(r.campaign_id),
            str(r.action),
            f"{int(r.n_exposed):,}",
            f"{int(r.n_comparable_unexposed):,}",
            pp(r.estimate),
            interval,
            pp(r.naive_estimate),
            str(r.evidence),
        )
    console.print(rich_table)


@app.command()
def validate(
    data: Annotated[Path, typer.Option("--data", help="Data directory (leads, activities, stage_history).")],
    quarantine: Annotated[
        Path | None, typer.Option("--quarantine", help="Where rejected rows go (default DATA/quarantine).")
    ] = None,
) -> None:
    """Check a data directory against its contract; quarantine bad rows with their reason."""
    from features import validation

    with user_errors():
        result = _run_with_status("validating", lambda: validation.load_history(data))
        files = validation.write_quarantine(result, quarantine or data / "quarantine")
    _print_report(result.report, quarantine or data / "quarantine")
    for table, path in files.items():
        console.print(f"[yellow]{table}[/]: {path}")


@app.command("import")
def import_(
    mapping: Annotated[
        str, typer.Option("--mapping", help="Mapping YAML, or the name of a shipped mapping (e.g. x_education_leads).")
    ],
    out: Annotated[Path, typer.Option("--out", help="Data directory to write (replaced as a whole).")],
    source: Annotated[
        Path | None,
        typer.Option("--source", help="Directory holding the export files (default: the mapping file's directory)."),
    ] = None,
    sample: Annotated[
        int | None, typer.Option("--sample", min=1, help="Import only the first N rows of the lead file (a preview).")
    ] = None,
    partitions: Annotated[
        int | None,
        typer.Option("--partitions", min=1, help="Write the data directory partitioned by lead into N parts."),
    ] = None,
) -> None:
    """Turn a CRM / marketing-automation export into a validated data directory, using a mapping file."""
    from features.mapping import QUARANTINE_DIR, import_export, resolve_mapping

    # MappingError is a ValueError: user_errors reports it with exit code 2.
    target = out if partitions is None else _staging_dir(out)
    try:
        with user_errors():
            summary = _run_with_status(
                "importing the export",
                lambda: import_export(resolve_mapping(mapping), source, target, sample_rows=sample),
            )
            if partitions is not None:
                from features.partitioned import partition_data_dir

                _run_with_status(
                    f"partitioning by lead into {partitions}", lambda: partition_data_dir(target, out, partitions)
                )
    finally:
        if partitions is not None:
            import shutil

            shutil.rmtree(target, ignore_errors=True)
    console.print(summary.render())
    _print_report(summary.validation, out / QUARANTINE_DIR)
    for name, path in summary.quarantine_files.items():
        if name != "report":
            console.print(f"[yellow]{name}[/]: {path}")
    console.print(f"[green]wrote[/] {out} ({summary.mode} mode): next, leadscore train --data {out}")


@app.command()
def features(
    data: Annotated[Path, typer.Option("--data", help="Data directory (leads, activities, stage_history).")],
    out: Annotated[Path, typer.Option("--out", help="Feature table to write (.parquet).")],
    as_of: Annotated[
        list[str] | None, typer.Option("--as-of", help="Snapshot date (repeatable). Default: every --every.")
    ] = None,
    every: Annotated[str | None, typer.Option("--every", help="Snapshot spacing, e.g. 7d or 2w.")] = None,
    horizon: Annotated[str | None, typer.Option("--horizon", help="Label horizon, e.g. 90d.")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Modelling config YAML.")] = None,
    quarantine: Annotated[Path | None, typer.Option("--quarantine", help="Where rejected rows go.")] = None,
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Build the partitions of a partitioned data directory on Dask: tcp://HOST:PORT (an existing "
            "scheduler) or local[:N] (N local worker processes). Default: LEADSCORE_DASK_ADDRESS, else no Dask.",
        ),
    ] = None,
) -> None:
    """Build point-in-time features and labels, one row per (lead, as_of).

    A partitioned data directory (``generate``/``import --partitions N``) is built partition by partition
    into a directory of ``part-NNNNN.parquet`` files at ``--out``; with ``--cluster`` on Dask.
    """
    from features.partitioned import is_partitioned

    cluster = _cluster(cluster)
    if is_partitioned(data) or cluster is not None:
        _partitioned_features(data, out, as_of, every, horizon, config, quarantine, cluster)
        return
    if out.suffix != ".parquet":
        raise typer.BadParameter("the feature table is written as Parquet: use a .parquet path", param_hint="--out")
    from pipelines.config import load_config

    if as_of and every:
        raise typer.BadParameter("give either --as-of dates or an --every spacing, not both", param_hint="--every")
    with user_errors():
        cfg = load_config(config)
        updates: dict[str, int] = {}
        if (every_days := _days(every, "--every")) is not None:
            updates["snapshot_every_days"] = every_days
        if (horizon_days := _days(horizon, "--horizon")) is not None:
            updates["horizon_days"] = horizon_days
        feature_cfg = cfg.features.model_copy(update=updates)
        _guard_prefect()
        from pipelines.flows import build_features_flow

        summary = _run_with_status(
            "building point-in-time features",
            lambda: build_features_flow(data, out, config=feature_cfg, as_of=as_of, quarantine_dir=quarantine),
        )
    _print_feature_summary(summary)


def _cluster(value: str | None) -> str | None:
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


def _partitioned_features(
    data: Path,
    out: Path,
    as_of: list[str] | None,
    every: str | None,
    horizon: str | None,
    config: Path | None,
    quarantine: Path | None,
    cluster: str | None,
) -> None:
    from features.partitioned import is_partitioned
    from pipelines.config import load_config

    if not is_partitioned(data):
        raise typer.BadParameter(
            f"{data} is not partitioned: --cluster needs a partitioned data directory "
            "(leadscore generate/import --partitions N)",
            param_hint="--cluster",
        )
    if as_of and every:
        raise typer.BadParameter("give either --as-of dates or an --every spacing, not both", param_hint="--every")
    with user_errors():
        cfg = load_config(config)
        updates: dict[str, int] = {}
        if (every_days := _days(every, "--every")) is not None:
            updates["snapshot_every_days"] = every_days
        if (horizon_days := _days(horizon, "--horizon")) is not None:
            updates["horizon_days"] = horizon_days
        feature_cfg = cfg.features.model_copy(update=updates)
        from pipelines.flows import build_partitioned_features_flow

        where = f"on {cluster}" if cluster else "in this process"
        summary = _run_with_status(
            f"building point-in-time features partition by partition ({where})",
            lambda: build_partitioned_features_flow(
                data, out, config=feature_cfg, as_of=as_of, quarantine_dir=quarantine, cluster=cluster
            ),
        )
    _print_feature_summary(summary)


def _print_feature_summary(summary: Any) -> None:
    table = Table(title="point-in-time features", show_header=False)
    table.add_row("feature table", str(summary.out))
    table.add_row("rows (lead x as_of)", f"{summary.rows:,}")
    table.add_row("snapshots", f"{summary.snapshots} ({summary.first_as_of} .. {summary.last_as_of})")
    table.add_row("features", str(summary.n_features))
    table.add_row("converted within horizon", f"{summary.positives:,}")
    console.print(table)
    _print_report(summary.validation, summary.quarantine_dir)


def _print_report(report: Any, quarantine_dir: Path) -> None:
    console.print(report.render())
    if report.rows_quarantined:
        console.print(f"[yellow]rejected rows and their reasons:[/] {quarantine_dir}")


@app.command()
def train(
    data: Annotated[Path, typer.Option("--data", help="Data directory (leads, activities, stage_history).")],
    config: Annotated[Path | None, typer.Option("--config", help="Modelling config YAML.")] = None,
    work_dir: Annotated[
        Path | None, typer.Option("--work-dir", help="Where the feature table goes (default LEADSCORE_HOME/work).")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Promote even if a guardrail (no signal, feature set...) refuses.")
    ] = False,
) -> None:
    """Build features, train readiness + stage, evaluate against baselines, register in MLflow, promote.

    Promotion runs under the guardrails (config ``promotion:``). Exits 1 when the model shows no signal or
    its feature set differs from the champion's (unless --force); a challenger that is merely not good
    enough keeps the champion and exits 0.
    """
    from pipelines.config import load_config
    from pipelines.settings import get_settings

    settings = get_settings()
    with user_errors():
        cfg = load_config(config)
        _guard_prefect()
        from pipelines.flows import train_flow

        summary = _run_with_status(
            "training (features, split, readiness, stage, baselines, evaluation, MLflow)",
            lambda: train_flow(
                data,
                work_dir or settings.home_dir / "work",
                cfg,
                settings.tracking_uri,
                settings.artifact_root,
                experiment=settings.experiment_name,
                model_name=settings.model_name,
                force=force,
            ),
        )
    _print_feature_summary(summary.features)
    _print_train_summary(summary, settings)
    decision = summary.decision
    if not decision.promoted and decision.guardrail in REFUSING_GUARDRAILS:
        err_console.print(
            f"[bold red]error:[/] version {decision.version} was registered but not promoted: "
            f"{' '.join(decision.failures)}\n(leadscore train --force promotes it anyway)",
        )
        raise typer.Exit(code=1)


#: Guardrails after which ``train`` exits non-zero: something is wrong with the data, not just the model.
REFUSING_GUARDRAILS = ("no_signal", "feature_set")


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def _print_train_summary(summary: Any, settings: Any) -> None:
    metrics = summary.metrics
    shown = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10", "recall_at_10", "lift_at_20"]
    table = Table(title="readiness on the test snapshots (the same rows for every model)")
    table.add_column("metric")
    for model_name in metrics:
        table.add_column(model_name.replace("_", " "), justify="right")
    for name in shown:
        table.add_row(name, *(_fmt(values.get(name)) for values in metrics.values()))
    console.print(table)
    if summary.stage_metrics:
        stage = summary.stage_metrics
        console.print(
            f"stage ({stage.get('decision_rule', 'argmax')} rule): accuracy {_fmt(stage.get('accuracy'))}, "
            f"macro F1 {_fmt(stage.get('macro_f1'))} (plain argmax: {_fmt(stage.get('argmax_accuracy'))} / "
            f"{_fmt(stage.get('argmax_macro_f1'))}; "
            f"majority class '{stage.get('majority_class')}': {_fmt(stage.get('majority_class_accuracy'))}; "
            f"test: {stage.get('test_strategy')})"
        )
    decision = summary.decision
    verdict = "[green]promoted to champion[/]" if decision.promoted else "[yellow]not promoted[/]"
    console.print(
        f"model [bold]{settings.model_name}[/] version [bold]{summary.run.version}[/] (run {summary.run.run_id}): "
        f"{verdict} — {decision.reason}"
    )
    for note in summary.notes:
        console.print(f"[yellow]note:[/] {note}")
    console.print(f"MLflow: {settings.tracking_uri}  (browse: mlflow ui --backend-store-uri {settings.tracking_uri})")


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
            _fmt(v.primary_value),
            v.run_id or "-",
        )
    console.print(table if versions else f"no versions of '{registry.name}' yet: run leadscore train")


def _print_decision(decision: Any) -> None:
    table = Table(title=f"version {decision.version} vs champion {decision.champion_version or '-'}")
    for column in ("metric", "candidate", "champion", "difference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value, other, diff in decision.metric_rows():
        table.add_row(name, _fmt(value), _fmt(other), _fmt(diff))
    console.print(table)
    verdict = "[green]champion moved[/]" if decision.promoted else "[yellow]champion unchanged[/]"
    rows = "same test rows" if decision.same_rows else "each model's own logged test metrics"
    console.print(f"{verdict}: {decision.reason} ({rows})")


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
        from features.validation import load_history
        from models.package.promotion import history_evaluator

        with user_errors():
            evaluate = history_evaluator(load_history(data).history)
    from pipelines.config import load_config

    with user_errors():
        policy = load_config(config).train.promotion
    with _registry() as registry:
        decision = registry.promote(version, evaluate=evaluate, policy=policy, force=force)
    _print_decision(decision)
    if not decision.promoted:
        raise typer.Exit(code=1)


@models_app.command("rollback")
def models_rollback() -> None:
    """Move the champion alias back to the previous champion."""
    with _registry() as registry:
        result = registry.rollback()
    console.print(f"champion of '{result.name}': version {result.from_version} -> {result.to_version}")


@app.command()
def score(
    data: Annotated[Path, typer.Option("--data", help="Data directory (leads, activities, stage_history).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Also export the batch for CRM import (.parquet or .csv).")
    ] = None,
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Score as of this time (default: now, capped at the data end + 1 day)."),
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Handoff policy YAML (default: the packaged policy).")
    ] = None,
    backfill: Annotated[
        int,
        typer.Option(
            "--backfill",
            min=0,
            help="First score the N past weekly batches, oldest first, each as of its own date (so matured "
            "results exist at once); dates the store already covers are skipped.",
        ),
    ] = 0,
) -> None:
    """Score every open lead with the champion model, decide handoffs and write the batch atomically."""
    if out is not None and out.suffix not in (".parquet", ".csv"):
        raise typer.BadParameter("export as .parquet or .csv", param_hint="--out")
    from pipelines.settings import get_settings

    settings = get_settings()
    with user_errors():
        from models.package.tracking import TrackingError
        from serving.policy import PolicyError, load_policy
        from serving.stores import StoreError

        try:
            load_policy(policy)  # fail fast on a bad policy, before loading the model and data
            _guard_prefect()
            from pipelines.flows import score_batch_flow

            summary = _run_with_status(
                "scoring open leads (champion, features, scores, reasons, handoffs, atomic write)",
                lambda: score_batch_flow(
                    data,
                    settings.score_store_url,
                    settings.tracking_uri,
                    settings.artifact_root,
                    model_name=settings.model_name,
                    alias=settings.champion_alias,
                    policy_path=policy,
                    as_of=as_of,
                    out=out,
                    backfill_weeks=backfill,
                ),
            )
        except (PolicyError, TrackingError, StoreError, LookupError) as exc:
            raise ValueError(str(exc)) from exc
    if summary.backfilled is not None:
        _print_backfill_summary(summary.backfilled)
    _print_score_summary(summary)


def _print_backfill_summary(filled: Any) -> None:
    if filled.batches:
        first, last = filled.batches[0], filled.batches[-1]
        console.print(
            f"[green]backfilled[/] {filled.n_written} weekly batch(es) as of {first.as_of.date()} .. "
            f"{last.as_of.date()} ({sum(b.n_leads for b in filled.batches):,} scores, "
            f"{sum(b.n_handoffs for b in filled.batches):,} handoffs)"
        )
    if filled.skipped:
        console.print(f"[yellow]backfill skipped[/] {len(filled.skipped)} date(s): {filled.skip_reason}")


def _print_score_summary(summary: Any) -> None:
    batch = summary.batch
    table = Table(title=f"score batch {batch.batch_id}", show_header=False)
    table.add_row("model", f"{batch.model_name} version {batch.model_version}")
    table.add_row("policy", batch.policy_version)
    table.add_row("as of", summary.as_of.isoformat())
    table.add_row("open leads scored", f"{summary.n_leads:,}")
    table.add_row("grades", "  ".join(f"{g}: {n:,}" for g, n in summary.grades.items()))
    table.add_row("trends", "  ".join(f"{k}: {n:,}" for k, n in sorted(summary.trends.items())))
    table.add_row("handed off", f"{summary.n_handoffs:,}")
    table.add_row("explained (reasons, next-best action)", f"{summary.n_explained:,}")
    if summary.export is not None:
        table.add_row("export", str(summary.export))
    console.print(table)
    if summary.queue:
        queue = Table(title="top of the handoff queue")
        for column in ("lead", "score", "grade", "readiness", "stage", "top reason", "next-best action"):
            queue.add_column(column)
        for rec in summary.queue:
            reasons = (rec.reasons or {}).get("positive") or []
            action = rec.next_best_action or {}
            queue.add_row(
                rec.lead_id,
                str(rec.score),
                rec.grade,
                f"{rec.readiness:.3f}",
                rec.stage or "-",
                reasons[0]["text"] if reasons else "-",
                action.get("label", "-"),
            )
        console.print(queue)
    else:
        console.print("no lead was handed off in this batch")


RUN_BACKFILL_WEEKS = 18  # about four months of weekly batches; the oldest five have matured (90-day horizon)


@app.command()
def report(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data directory (matured outcomes, sources, campaigns, drift need it)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="SQLAlchemy URL of the score store (default: SQLite in LEADSCORE_HOME)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Only batches, handoffs and touches from this date on (ISO date).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="HTML file to write (default LEADSCORE_HOME/report/report.html).")
    ] = None,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Handoff policy YAML (default: the packaged policy).")
    ] = None,
    effects: Annotated[
        Path | None, typer.Option("--effects", help="Campaign effects table (.parquet/.csv) for section 4.")
    ] = None,
) -> None:
    """The alignment report for sales and marketing managers: one self-contained HTML page."""
    if out is not None and out.suffix.lower() not in (".html", ".htm"):
        raise typer.BadParameter("the report is an HTML file: use a .html path", param_hint="--out")
    from pipelines.settings import get_settings

    settings = get_settings()
    with user_errors():
        from models.package.tracking import TrackingError
        from serving.policy import PolicyError, load_policy
        from serving.stores import StoreError

        if since is not None:
            from features.snapshots import parse_as_of

            parse_as_of([since])  # a bad date fails here, before the model loads
        try:
            load_policy(policy)
            from pipelines.flows import report_flow

            summary = _run_with_status(
                "building the alignment report (store, history, champion, sections, charts)",
                lambda: report_flow(
                    out or settings.report_path,
                    store or settings.score_store_url,
                    settings.tracking_uri,
                    settings.artifact_root,
                    model_name=settings.model_name,
                    alias=settings.champion_alias,
                    data_dir=data,
                    policy_path=policy,
                    since=since,
                    effects_path=effects,
                    experiment=settings.experiment_name,
                ),
            )
        except (PolicyError, TrackingError, StoreError, LookupError) as exc:
            raise ValueError(str(exc)) from exc
    for sentence in summary.summary:
        console.print(f"- {sentence}", markup=False, highlight=False)
    if summary.logged_to_run:
        console.print(f"logged to MLflow run {summary.logged_to_run} (artifact report/{summary.path.name})")
    console.print(f"[green]report written[/]: {summary.path}")


@app.command()
def run(
    workdir: Annotated[Path, typer.Option("--workdir", help="Where the demo data and outputs go.")] = Path(
        ".leadscore/demo"
    ),
    leads: Annotated[int, typer.Option("--leads", min=1, help="Leads to simulate if no data exists.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed")] = 7,
    data: Annotated[
        Path | None, typer.Option("--data", help="Use this data directory instead of simulating one.")
    ] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Modelling config YAML.")] = None,
    backfill: Annotated[
        int, typer.Option("--backfill", min=0, help="Past weekly batches to score before today's.")
    ] = RUN_BACKFILL_WEEKS,
) -> None:
    """The main job, end to end: (simulate) -> validate -> features -> train -> promote -> score -> report."""
    data_dir = data or workdir / "data"
    if data is None and not (data_dir / "contract.yaml").exists():
        generate(out=data_dir, leads=leads, seed=seed, fmt="parquet", drift_after=None)
    train(data=data_dir, config=config, work_dir=workdir)
    # A few months of past weekly batches, so the demo has matured results to monitor and report on.
    score(data=data_dir, out=workdir / "scores.parquet", as_of=None, policy=None, backfill=backfill)
    report(data=data_dir, store=None, since=None, out=None, policy=None, effects=None)


@app.command()
def monitor(
    data: Annotated[Path, typer.Option("--data", help="Data directory (leads, activities, stage_history).")],
    store: Annotated[
        str | None,
        typer.Option("--store", help="SQLAlchemy URL of the score store (default: SQLite in LEADSCORE_HOME)."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option("--config", help="Modelling config YAML (its train.monitoring section).")
    ] = None,
    out_dir: Annotated[
        Path | None, typer.Option("--out-dir", help="Where the JSON results go (default LEADSCORE_HOME/monitor).")
    ] = None,
) -> None:
    """Drift of the scored population vs the champion's training data, and matured performance of served scores.

    Exit code 0: no alert; 1: an alert (score PSI, a top feature's PSI, or matured PR AUC past the thresholds
    in the config's monitoring: section), also logged as an error and POSTed to $LEADSCORE_ALERT_WEBHOOK_URL;
    2: bad input (data, config, no champion).
    """
    import logging

    from pipelines.settings import get_settings

    settings = get_settings()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with user_errors():
        from models.package.tracking import TrackingError
        from serving.monitoring.monitor import AlertDeliveryError
        from serving.stores import StoreError

        try:
            from pipelines.flows import monitor_flow

            summary = _run_with_status(
                "monitoring (champion, reference, current batch, PSI, matured labels)",
                lambda: monitor_flow(
                    data,
                    store or settings.score_store_url,
                    settings.tracking_uri,
                    settings.artifact_root,
                    model_name=settings.model_name,
                    alias=settings.champion_alias,
                    config_path=config,
                    result_dir=out_dir or settings.monitor_dir,
                    experiment=settings.experiment_name,
                    webhook_url=settings.alert_webhook_url or "",
                ),
            )
        except AlertDeliveryError as exc:
            err_console.print(f"[bold red]alert not delivered:[/] {exc} (LEADSCORE_ALERT_WEBHOOK_URL)")
            raise typer.Exit(code=1) from exc
        except (TrackingError, StoreError, LookupError) as exc:
            raise ValueError(str(exc)) from exc
    _print_monitor_summary(summary)
    if summary.alerting:
        raise typer.Exit(code=1)


def _psi_text(value: Any, threshold: float) -> str:
    import math

    if value is None or not math.isfinite(value):
        return "-"
    return f"[bold red]{value:.3f}[/]" if value > threshold else f"{value:.3f}"


def _print_monitor_summary(summary: Any) -> None:
    result = summary.result
    drift, perf = result.drift, result.performance
    model = result.model
    head = Table(title=f"monitor: champion {model.get('name')} version {model.get('version')}", show_header=False)
    cur, ref = result.current, result.reference
    batch = f"batch {cur['batch_id']}" if cur.get("batch_id") is not None else "no batch yet (scored now)"
    head.add_row(
        "current population",
        f"{batch}, as of {cur['as_of']}: {cur['n_compared']:,} of {cur['n_scored']:,} leads compared",
    )
    dates = ", ".join(d[:10] for d in ref["as_of_dates"][-4:])
    head.add_row("reference", f"{ref.get('source')}: {ref['n_compared']:,} of {ref['n_rows']:,} rows ({dates})")
    if ref.get("age_limit_days") is not None:
        head.add_row("ages compared", f"leads up to {ref['age_limit_days']:.0f} days old")
    head.add_row("score PSI", f"{_psi_text(drift.score_psi, drift.score_threshold)}  (alert > {drift.score_threshold})")
    head.add_row(
        f"features over PSI {drift.feature_threshold}",
        f"{len(drift.flagged_features)} ({len(drift.alerting_features)} among the top {drift.top_k})",
    )
    if perf.n:
        test_pr = result.champion_test.get("pr_auc")
        head.add_row(
            "matured scores",
            f"{perf.n:,} from {perf.n_batches} batch(es), {perf.positives:,} converted ({perf.base_rate:.2%})",
        )
        head.add_row(
            "matured ROC AUC / PR AUC",
            f"{perf.roc_auc:.3f} ({perf.roc_auc_ci[0]:.3f}-{perf.roc_auc_ci[1]:.3f}) / {perf.pr_auc:.3f} "
            f"({perf.pr_auc_ci[0]:.3f}-{perf.pr_auc_ci[1]:.3f}); champion test PR AUC "
            + ("-" if test_pr is None else f"{test_pr:.3f}"),
        )
    else:
        head.add_row("matured scores", "none yet")
    head.add_row("result", str(summary.path))
    console.print(head)

    top = Table(title="features that moved most (PSI vs the reference)")
    for column in ("feature", "PSI", "importance rank", "rows ref / current"):
        top.add_column(column, justify="left" if column == "feature" else "right")
    for row in drift.moved_most(10).itertuples():
        threshold = drift.feature_threshold
        top.add_row(
            row.feature + (" *" if row.top else ""),
            _psi_text(row.psi, threshold),
            str(row.rank),
            f"{row.n_reference:,} / {row.n_current:,}",
        )
    console.print(top)
    console.print(f"* among the {drift.top_k} most important features (their PSI > {drift.feature_threshold} alerts)")

    if perf.n:
        grades = Table(title="matured conversion per grade (95 % Wilson interval)")
        for column in ("grade", "scores", "converted", "rate", "95 % interval", "mean readiness"):
            grades.add_column(column, justify="right")
        for g in perf.by_grade.itertuples():
            rate = "-" if g.n == 0 else f"{g.rate:.2%}"
            ci = "-" if g.n == 0 else f"{g.ci_low:.2%}-{g.ci_high:.2%}"
            mean = "-" if g.n == 0 else f"{g.mean_readiness:.2%}"
            grades.add_row(g.grade, f"{g.n:,}", f"{g.converted:,}", rate, ci, mean)
        console.print(grades)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}")
    if result.alerts:
        for alert in result.alerts:
            err_console.print(f"[bold red]ALERT {alert.kind}:[/] {alert.message}")
        if summary.webhook_status is not None:
            console.print(f"alert posted to the webhook (HTTP {summary.webhook_status})")
    else:
        console.print("[green]no alert[/]: population stable and served scores within bounds")


@app.command()
def serve(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data directory whose leads can be scored by lead_id (and its data contract)."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    policy: Annotated[
        Path | None, typer.Option("--policy", help="Handoff policy YAML (default: the packaged policy).")
    ] = None,
    store: Annotated[
        str | None,
        typer.Option("--store", help="SQLAlchemy URL of the score store (default: SQLite in LEADSCORE_HOME)."),
    ] = None,
    poll_seconds: Annotated[
        float, typer.Option("--poll-seconds", min=0, help="Check for a newly promoted champion this often (0 = never).")
    ] = 30.0,
    max_body_bytes: Annotated[
        int, typer.Option("--max-body-bytes", min=1, help="Larger request bodies are refused with 413.")
    ] = 1_048_576,
    store_check_seconds: Annotated[
        float,
        typer.Option(
            "--store-check-seconds",
            min=0,
            help="On-demand scoring checks the score store for a new batch at most this often (0 = every "
            "request). Trends and cool-downs may lag a newly written batch by up to this long.",
        ),
    ] = 1.0,
    deadline_seconds: Annotated[
        float,
        typer.Option("--deadline-seconds", min=0.001, help="A request not answered this fast gets 503 + Retry-After."),
    ] = 2.0,
    max_in_flight: Annotated[
        int, typer.Option("--max-in-flight", min=1, help="More requests in progress than this get 503 at once.")
    ] = 64,
    rate_limit: Annotated[
        float | None,
        typer.Option("--rate-limit", min=0.001, help="Requests a second per API key, 429 past it (default: off)."),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option("--cors-origin", help="Browser origin allowed to call the API (repeatable; default: no CORS)."),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn log level.")] = "info",
    access_log: Annotated[bool, typer.Option("--access-log/--no-access-log", help="Log every request.")] = True,
) -> None:
    """Serve the champion to the CRM: /v1/score, /v1/leads/{id}/score, /v1/handoff, /v1/feedback, /v1/model, /v1/report.

    API keys come from $LEADSCORE_API_KEYS (comma-separated, name:key) and/or the file named by
    $LEADSCORE_API_KEYS_FILE. One worker process; a newly promoted champion is picked up without restart.
    """
    import logging
    import os

    import uvicorn

    from pipelines.settings import get_settings
    from serving.app import ServiceConfig, create_app
    from serving.auth import API_KEYS_FILE_ENV, KeysFileReloader, load_api_keys
    from serving.policy import load_policy
    from serving.stores import default_store_url

    settings = get_settings()
    with user_errors():
        config = ServiceConfig(
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            alias=settings.champion_alias,
            policy=load_policy(policy),
            store_url=store or default_store_url(settings.home_dir),
            api_keys=load_api_keys(),
            data_dir=data,
            poll_seconds=poll_seconds,
            max_body_bytes=max_body_bytes,
            store_check_seconds=store_check_seconds,
            report_path=settings.report_path,
            deadline_seconds=deadline_seconds,
            max_in_flight=max_in_flight,
            rate_limit_per_second=rate_limit,
            cors_origins=tuple(cors_origin or ()),
            api_keys_reloader=KeysFileReloader(keys_file, load_api_keys)
            if (keys_file := os.environ.get(API_KEYS_FILE_ENV))
            else None,
        )
        application = create_app(config)  # refuses to start without API keys
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # One worker: the model and the feature snapshot live in this process. uvicorn's asyncio transports set
    # TCP_NODELAY on every accepted connection (no 40 ms delayed-ACK stalls on small responses).
    # Keep-alive longer than the usual 60 s idle timeout of load balancers and CRM HTTP clients, so they
    # close idle connections first (the server closing one races with a request sent on it).
    # The C HTTP parser and event loop when installed (optional extras: uvicorn[standard]); both cut the
    # per-request overhead. Without them uvicorn's pure-Python h11 and asyncio work the same, a bit slower.
    import importlib.util

    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    uvicorn.run(
        application,
        host=host,
        port=port,
        log_level=log_level,
        access_log=access_log,
        workers=1,
        http=http,
        loop=loop,
        timeout_keep_alive=75,
    )


@app.command()
def deploy(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data directory the scheduled runs read (default: LEADSCORE_HOME/demo/data)."),
    ] = None,
    score_cron: Annotated[
        str | None, typer.Option("--score-cron", help="Schedule of score-batch (cron, UTC). Default: 0 2 * * *.")
    ] = None,
    train_cron: Annotated[
        str | None, typer.Option("--train-cron", help="Schedule of train (cron, UTC). Default: 0 3 * * 0.")
    ] = None,
    monitor_cron: Annotated[str | None, typer.Option("--monitor-cron", help="Schedule of monitor (cron, UTC).")] = None,
    report_cron: Annotated[str | None, typer.Option("--report-cron", help="Schedule of report (cron, UTC).")] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="Modelling config YAML, stored in the deployments (default: shipped defaults)."),
    ] = None,
    pool: Annotated[str, typer.Option("--pool", help="Prefect work pool (type process; created if missing).")] = (
        "leadscore"
    ),
    serve_them: Annotated[
        bool, typer.Option("--serve", help="Serve the deployments from this process instead (blocks; no worker).")
    ] = False,
) -> None:
    """Create or update the scheduled Prefect deployments (score-batch, train, ...) on PREFECT_API_URL."""
    from pipelines.deployments import DeploymentError, create_deployments, serve_deployments
    from pipelines.settings import get_settings

    settings = get_settings()
    data_dir = data or settings.home_dir / "demo" / "data"
    crons = {"score-batch": score_cron, "train": train_cron, "monitor": monitor_cron, "report": report_cron}
    try:
        with user_errors():
            if serve_them:
                console.print("serving the leadscore deployments from this process (Ctrl-C to stop) ...")
                serve_deployments(settings, data_dir, crons, config)
                return
            created = _run_with_status(
                "creating deployments",
                lambda: create_deployments(settings, data_dir, crons, config_path=config, work_pool=pool),
            )
    except DeploymentError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(code=2) from exc
    table = Table(title=f"Prefect deployments (work pool '{pool}')")
    for column in ("deployment", "schedule (UTC)", "data"):
        table.add_column(column)
    for item in created:
        table.add_row(item.full_name, item.cron, str(item.parameters.get("data_dir", "-")))
    console.print(table)
    console.print(
        "next: start a worker that runs them (keep it running, e.g. under systemd):\n"
        f"  prefect worker start --pool {pool}\n"
        "or, without a worker, serve them from one process: leadscore deploy --serve\n"
        f"run one now: prefect deployment run '{created[0].full_name}'   (docs/operations.md)",
        markup=False,
    )


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
