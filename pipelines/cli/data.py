"""Commands on data: generate, validate, import, features, effects."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipelines.cli.common import (
    app,
    cluster_option,
    console,
    guard_prefect,
    parse_days,
    progress_display,
    run_with_status,
    user_errors,
)
from pipelines.cli.output import print_effects, print_feature_summary, print_validation_report


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
        with user_errors(), progress_display() as progress:
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

                run_with_status(
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
        history = run_with_status("validating", lambda: validation.load_history(data).history)
        est = EffectEstimator(actions, feature_config=cfg.features, horizon_days=parse_days(horizon, "--horizon"))
        table = run_with_status("estimating effects", lambda: est.fit(history).table_)
        if out is not None:
            write_effects(table, out)
    print_effects(table, est.horizon_days_)
    if out is not None:
        console.print(f"[green]wrote[/] {out}")


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
        result = run_with_status("validating", lambda: validation.load_history(data))
        files = validation.write_quarantine(result, quarantine or data / "quarantine")
    print_validation_report(result.report, quarantine or data / "quarantine")
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
            summary = run_with_status(
                "importing the export",
                lambda: import_export(resolve_mapping(mapping), source, target, sample_rows=sample),
            )
            if partitions is not None:
                from features.partitioned import partition_data_dir

                run_with_status(
                    f"partitioning by lead into {partitions}", lambda: partition_data_dir(target, out, partitions)
                )
    finally:
        if partitions is not None:
            import shutil

            shutil.rmtree(target, ignore_errors=True)
    console.print(summary.render())
    print_validation_report(summary.validation, out / QUARANTINE_DIR)
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

    cluster = cluster_option(cluster)
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
        if (every_days := parse_days(every, "--every")) is not None:
            updates["snapshot_every_days"] = every_days
        if (horizon_days := parse_days(horizon, "--horizon")) is not None:
            updates["horizon_days"] = horizon_days
        feature_cfg = cfg.features.model_copy(update=updates)
        guard_prefect()
        from pipelines.flows import build_features_flow

        summary = run_with_status(
            "building point-in-time features",
            lambda: build_features_flow(data, out, config=feature_cfg, as_of=as_of, quarantine_dir=quarantine),
        )
    print_feature_summary(summary)


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
        if (every_days := parse_days(every, "--every")) is not None:
            updates["snapshot_every_days"] = every_days
        if (horizon_days := parse_days(horizon, "--horizon")) is not None:
            updates["horizon_days"] = horizon_days
        feature_cfg = cfg.features.model_copy(update=updates)
        from pipelines.partitioned import build_partitioned_features_flow

        where = f"on {cluster}" if cluster else "in this process"
        summary = run_with_status(
            f"building point-in-time features partition by partition ({where})",
            lambda: build_partitioned_features_flow(
                data, out, config=feature_cfg, as_of=as_of, quarantine_dir=quarantine, cluster=cluster
            ),
        )
    print_feature_summary(summary)
