"""Commands that train, score, serve, monitor, report and deploy."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from pipelines.cli.common import (
    app,
    console,
    err_console,
    guard_prefect,
    resolve_cluster,
    run_with_status,
    user_errors,
)
from pipelines.cli.data import generate
from pipelines.cli.output import (
    RUN_BACKFILL_WEEKS,
    print_backfill_summary,
    print_feature_summary,
    print_monitor_summary,
    print_score_summary,
    print_train_summary,
)


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
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Build the features and train the boosters of a partitioned data directory on Dask: "
            "tcp://HOST:PORT (an existing scheduler) or local[:N] (N local worker processes). "
            "Default: LEADSCORE_DASK_ADDRESS, else no Dask.",
        ),
    ] = None,
) -> None:
    """Build features, train readiness + stage, evaluate against baselines, register in MLflow, promote.

    A partitioned data directory (generate/import --partitions N) gets partitioned features; with --cluster
    they are built and the boosters trained on Dask (docs/scale-out.md), the rest runs here.

    Promotion runs under the guardrails (config ``promotion:``). Exits 1 when the model shows no signal or
    its feature set differs from the champion's (unless --force); a challenger that is merely not good
    enough keeps the champion and exits 0.
    """
    from pipelines.config import load_config
    from pipelines.settings import get_settings

    settings = get_settings()
    cluster = resolve_cluster(cluster, data)
    with user_errors():
        cfg = load_config(config)
        guard_prefect()
        from pipelines.flows import train_flow

        summary = run_with_status(
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
                cluster=cluster,
            ),
        )
    print_feature_summary(summary.features)
    print_train_summary(summary, settings)
    decision = summary.decision
    if not decision.promoted and decision.guardrail in REFUSING_GUARDRAILS:
        err_console.print(
            f"[bold red]error:[/] version {decision.version} was registered but not promoted: "
            f"{' '.join(decision.failures)}\n(leadscore train --force promotes it anyway)",
        )
        raise typer.Exit(code=1)


#: Guardrails after which ``train`` exits non-zero: something is wrong with the data, not just the model.
REFUSING_GUARDRAILS = ("no_signal", "feature_set")


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
    cluster: Annotated[
        str | None,
        typer.Option(
            "--cluster",
            help="Score the partitions of a partitioned data directory on Dask: tcp://HOST:PORT (an existing "
            "scheduler) or local[:N] (N local worker processes). Default: LEADSCORE_DASK_ADDRESS, else no Dask.",
        ),
    ] = None,
) -> None:
    """Score every open lead with the champion model, decide handoffs and write the batch atomically.

    A partitioned data directory is scored partition by partition (with --cluster on Dask) and the batch is
    the one the single-machine path writes; its --out may also be a directory (part-NNNNN.parquet files).
    """
    from features.partitioned import is_partitioned

    cluster = resolve_cluster(cluster, data)
    partitioned = is_partitioned(data)
    if out is not None and out.suffix not in (".parquet", ".csv") and not partitioned:
        raise typer.BadParameter("export as .parquet or .csv", param_hint="--out")
    if partitioned and backfill:
        raise typer.BadParameter("not supported on a partitioned data directory yet", param_hint="--backfill")
    from pipelines.settings import get_settings

    settings = get_settings()
    with user_errors():
        from models.package.tracking import TrackingError
        from serving.policy import PolicyError, load_policy
        from serving.stores import StoreError

        try:
            load_policy(policy)  # fail fast on a bad policy, before loading the model and data
            guard_prefect()
            from pipelines.flows import score_batch_flow

            summary = run_with_status(
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
                    cluster=cluster,
                ),
            )
        except (PolicyError, TrackingError, StoreError, LookupError) as exc:
            raise ValueError(str(exc)) from exc
    if summary.backfilled is not None:
        print_backfill_summary(summary.backfilled)
    print_score_summary(summary)


@app.command()
def report(
    data: Annotated[
        Path | None,
        typer.Option("--data", help="Data directory (matured outcomes, sources, campaigns, drift need it)."),
    ] = None,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="SQLAlchemy URL of the score store (default: $LEADSCORE_STORE_URL, else SQLite in LEADSCORE_HOME).",
        ),
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

            summary = run_with_status(
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
def feedback(
    data: Annotated[Path, typer.Option("--data", help="Data directory whose stage history holds sales' verdicts.")],
    store: Annotated[
        str | None, typer.Option("--store", help="Score store URL (default: LEADSCORE_STORE_URL or the home's SQLite).")
    ] = None,
    accept_stage: Annotated[
        str, typer.Option("--accept-stage", help="Entering this stage (or a later, not negative one) = accepted.")
    ] = "sql",
    within_days: Annotated[
        int, typer.Option("--within-days", min=1, help="A stage entry this many days after the handoff decides.")
    ] = 30,
) -> None:
    """Record sales' verdicts on handoffs from the CRM stage history (for CRMs that do not POST /v1/feedback).

    A handoff without feedback is accepted when the lead enters the accept stage or a later one within the
    window, rejected (reason crm_<stage>) when it is closed negatively first; feedback already recorded is kept.
    """
    from pipelines.settings import get_settings

    settings = get_settings()
    with user_errors():
        from features.validation import load_history
        from serving.stage_feedback import record_stage_feedback
        from serving.stores import ScoreStore, StoreError

        history = load_history(data).history
        try:
            with ScoreStore(store or settings.score_store_url) as score_store:
                summary = record_stage_feedback(
                    score_store, history, accept_stage=accept_stage, within_days=within_days
                )
        except StoreError as exc:
            raise ValueError(str(exc)) from exc
    console.print(summary.text(), markup=False, highlight=False)


@app.command()
def run(
    workdir: Annotated[
        Path | None,
        typer.Option("--workdir", help="Where the demo data and outputs go (default: LEADSCORE_HOME/demo)."),
    ] = None,
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
    """The main job, end to end: (simulate) -> validate -> features -> train -> promote -> score -> feedback
    (from the stage history) -> report."""
    if workdir is None:
        from pipelines.settings import get_settings

        workdir = get_settings().home / "demo"  # as given (relative stays relative), like the other outputs
    data_dir = data or workdir / "data"
    if data is None and not (data_dir / "contract.yaml").exists():
        generate(out=data_dir, leads=leads, seed=seed, fmt="parquet", drift_after=None)
    train(data=data_dir, config=config, work_dir=workdir)
    # A few months of past weekly batches, so the demo has matured results to monitor and report on.
    score(data=data_dir, out=workdir / "scores.parquet", as_of=None, policy=None, backfill=backfill)
    # sales' verdicts as the CRM's stage history records them, so the report can show acceptance at once
    feedback(data=data_dir, store=None, accept_stage="sql", within_days=30)
    report(data=data_dir, store=None, since=None, out=None, policy=None, effects=None)


@app.command()
def monitor(
    data: Annotated[Path, typer.Option("--data", help="Data directory (leads, activities, stage_history).")],
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="SQLAlchemy URL of the score store (default: $LEADSCORE_STORE_URL, else SQLite in LEADSCORE_HOME).",
        ),
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

            summary = run_with_status(
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
    print_monitor_summary(summary)
    if summary.alerting:
        raise typer.Exit(code=1)


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
        typer.Option(
            "--store",
            help="SQLAlchemy URL of the score store (default: $LEADSCORE_STORE_URL, else SQLite in LEADSCORE_HOME).",
        ),
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

    # The champion watcher retries on its own (every few seconds until a model is loaded, then every poll).
    # MLflow's HTTP client would otherwise retry an unreachable tracking server for ~4 minutes inside one
    # attempt (7 retries with backoff) before /ready could say so. Settings in the environment win.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    settings = get_settings()
    with user_errors():
        if data is not None:  # checked here: the app would only find out at startup, inside uvicorn's lifespan
            from features.contract import Contract

            Contract.load(data)
        config = ServiceConfig(
            tracking_uri=settings.tracking_uri,
            model_name=settings.model_name,
            alias=settings.champion_alias,
            policy=load_policy(policy),
            store_url=store or settings.score_store_url,
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
            created = run_with_status(
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
