"""How the commands print their results (rich tables and summaries)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from pipelines.cli.common import console, err_console


def without_password(uri: str) -> str:
    """``uri`` with the password of its user info replaced by ``***`` (for output and logs)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def print_effects(table: Any, horizon_days: int) -> None:
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


def print_feature_summary(summary: Any) -> None:
    table = Table(title="point-in-time features", show_header=False)
    table.add_row("feature table", str(summary.out))
    table.add_row("rows (lead x as_of)", f"{summary.rows:,}")
    table.add_row("snapshots", f"{summary.snapshots} ({summary.first_as_of} .. {summary.last_as_of})")
    table.add_row("features", str(summary.n_features))
    table.add_row("converted within horizon", f"{summary.positives:,}")
    console.print(table)
    print_validation_report(summary.validation, summary.quarantine_dir)


def print_validation_report(report: Any, quarantine_dir: Path) -> None:
    console.print(report.render())
    for warning in getattr(report, "warnings", ()):
        console.print(f"[yellow]warning:[/] {warning}")
    if report.rows_quarantined:
        console.print(f"[yellow]rejected rows and their reasons:[/] {quarantine_dir}")


def fmt_value(value: Any) -> str:
    return "-" if value is None else f"{value:.4f}"


def print_train_summary(summary: Any, settings: Any) -> None:
    metrics = summary.metrics
    shown = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "lift_at_10", "recall_at_10", "lift_at_20"]
    table = Table(title="readiness on the test snapshots (the same rows for every model)")
    table.add_column("metric")
    for model_name in metrics:
        table.add_column(model_name.replace("_", " "), justify="right")
    for name in shown:
        table.add_row(name, *(fmt_value(values.get(name)) for values in metrics.values()))
    console.print(table)
    if summary.stage_metrics:
        stage = summary.stage_metrics
        console.print(
            f"stage ({stage.get('decision_rule', 'argmax')} rule): accuracy {fmt_value(stage.get('accuracy'))}, "
            f"macro F1 {fmt_value(stage.get('macro_f1'))} (plain argmax: {fmt_value(stage.get('argmax_accuracy'))} / "
            f"{fmt_value(stage.get('argmax_macro_f1'))}; "
            f"majority class '{stage.get('majority_class')}': {fmt_value(stage.get('majority_class_accuracy'))}; "
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
    uri = without_password(settings.tracking_uri)
    console.print(f"MLflow: {uri}  (browse: mlflow ui --backend-store-uri {uri})")


def print_decision(decision: Any) -> None:
    table = Table(title=f"version {decision.version} vs champion {decision.champion_version or '-'}")
    for column in ("metric", "candidate", "champion", "difference"):
        table.add_column(column, justify="left" if column == "metric" else "right")
    for name, value, other, diff in decision.metric_rows():
        table.add_row(name, fmt_value(value), fmt_value(other), fmt_value(diff))
    console.print(table)
    verdict = "[green]champion moved[/]" if decision.promoted else "[yellow]champion unchanged[/]"
    rows = "same test rows" if decision.same_rows else "each model's own logged test metrics"
    console.print(f"{verdict}: {decision.reason} ({rows})")


def print_backfill_summary(filled: Any) -> None:
    if filled.batches:
        first, last = filled.batches[0], filled.batches[-1]
        console.print(
            f"[green]backfilled[/] {filled.n_written} weekly batch(es) as of {first.as_of.date()} .. "
            f"{last.as_of.date()} ({sum(b.n_leads for b in filled.batches):,} scores, "
            f"{sum(b.n_handoffs for b in filled.batches):,} handoffs)"
        )
    if filled.skipped:
        console.print(f"[yellow]backfill skipped[/] {len(filled.skipped)} date(s): {filled.skip_reason}")


def print_score_summary(summary: Any) -> None:
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


def _psi_text(value: Any, threshold: float) -> str:
    import math

    if value is None or not math.isfinite(value):
        return "-"
    return f"[bold red]{value:.3f}[/]" if value > threshold else f"{value:.3f}"


def print_monitor_summary(summary: Any) -> None:
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
