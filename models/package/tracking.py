"""MLflow tracking: where runs go, and logging one training run with its single pyfunc model.

Nothing here touches MLflow at import time. The pipeline calls :func:`configure_mlflow` with the
tracking URI from its settings, then :func:`log_training_run` once per training.

Layout of a training run::

    params      config.<path>        flattened modelling config
                <name>                hyperparameters passed as ``params``
                data.*                lineage: data dir, content hash, row counts, date spans
    metrics     <metric>             the leadscore model's own metrics (plain names)
                baseline_<name>.<m>  each baseline's metrics
                <namespace>.<m>      other metrics, e.g. stage.accuracy
    artifacts   config.yaml, lineage.json, plots/<name>.png,
                evaluation/test_rows.parquet   ids + labels of the test snapshots (promotion
                                               re-evaluates the champion on exactly these rows)
                monitoring/reference_rows.parquet  the drift reference: training rows (ids, features,
                                               readiness, score) at the newest training as-of dates
    model       ``model``: the pyfunc (see :mod:`models.package.bundle`), registered as a new version
                with alias ``challenger``
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from features.io import write_table
from features.spec import ID_COLUMNS
from models.package.bundle import log_pyfunc_model
from models.package.uris import redact_uri

logger = logging.getLogger(__name__)

CHALLENGER_ALIAS = "challenger"
CHAMPION_ALIAS = "champion"
TEST_ROWS_ARTIFACT = "evaluation/test_rows.parquet"
REFERENCE_ROWS_ARTIFACT = "monitoring/reference_rows.parquet"
CONFIG_ARTIFACT = "config.yaml"
LINEAGE_ARTIFACT = "lineage.json"
EFFECTS_ARTIFACT = "effects/effects.csv"  # the effect table of models.explain.effects, when estimated
LEAKAGE_ARTIFACT = "evaluation/leakage.json"
PLOTS_DIR = "plots"
BASELINE_PREFIX = "baseline_"
DEFAULT_ARTIFACT_DIR = "mlartifacts"

# MLflow rejects longer param values (mlflow.utils.validation.MAX_PARAM_VAL_LENGTH).
_MAX_PARAM_VALUE = 6000
_HASH_CHUNK = 1 << 20


class TrackingError(RuntimeError):
    """The tracking store cannot be used as configured."""


@dataclass(frozen=True)
class TrackingTarget:
    """A configured tracking store: URI plus the root under which new experiments keep artifacts."""

    tracking_uri: str
    artifact_root: Path | None

    def client(self) -> Any:
        """An ``MlflowClient`` bound to this store (tracking and registry)."""
        import mlflow

        return mlflow.MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def display_uri(self) -> str:
        """The URI with any password masked, for messages."""
        return redact_uri(self.tracking_uri)


@dataclass(frozen=True)
class DataLineage:
    """Which data a model was trained on.

    Attributes:
        data_dir: The input data directory as given by the user.
        content_hash: sha256 over the data files (see :func:`content_hash`).
        files: Relative names of the hashed files.
        row_counts: Row counts by name, e.g. ``{"snapshots": ..., "train": ..., "test": ...}``.
        date_spans: First and last as-of date by split, e.g. ``{"train": ("2024-01-07", ...)}``.
    """

    data_dir: str
    content_hash: str
    files: tuple[str, ...] = ()
    row_counts: dict[str, int] = field(default_factory=dict)
    date_spans: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def from_data_dir(
        cls,
        data_dir: str | Path,
        *,
        row_counts: Mapping[str, int] | None = None,
        date_spans: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> DataLineage:
        """Hash the data files under ``data_dir`` and record the given counts and spans."""
        data_dir = Path(data_dir)
        files = data_files([data_dir])
        return cls(
            data_dir=str(data_dir),
            content_hash=content_hash([data_dir]),
            files=tuple(name for name, _ in files),
            row_counts={k: int(v) for k, v in (row_counts or {}).items()},
            date_spans={k: (_date_str(a), _date_str(b)) for k, (a, b) in (date_spans or {}).items()},
        )

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["files"] = list(self.files)
        out["date_spans"] = {k: list(v) for k, v in self.date_spans.items()}
        return out

    def params(self) -> dict[str, str]:
        out = {"data.dir": self.data_dir, "data.content_hash": self.content_hash, "data.files": str(len(self.files))}
        out.update({f"data.rows.{k}": str(v) for k, v in self.row_counts.items()})
        out.update({f"data.span.{k}": f"{a}..{b}" for k, (a, b) in self.date_spans.items()})
        return out


@dataclass(frozen=True)
class TrainingRun:
    """What :func:`log_training_run` created."""

    run_id: str
    experiment_id: str
    model_id: str | None
    registered_model_name: str
    version: int
    model_uri: str
    artifact_uri: str


# --------------------------------------------------------------------------------------------
# configuration


def configure_mlflow(
    tracking_uri: str,
    artifact_root: str | Path | None = None,
    *,
    disable_telemetry: bool = True,
) -> TrackingTarget:
    """Point MLflow (tracking and registry) at ``tracking_uri`` and check that it works.

    * ``sqlite:///path/mlflow.db``: the parent directory is created; artifacts default to
      ``path/mlartifacts`` beside the database.
    * ``postgresql+psycopg://user@host:port/db``: the database is created if missing.
    * Other URIs (``http(s)://`` tracking servers, ``file:``) are used as they are.

    MLflow creates its tables on first use (a few seconds for a new database).

    Args:
        tracking_uri: Tracking and registry store URI.
        artifact_root: Directory under which experiments created by leadscore keep their
            artifacts. Existing experiments keep their own location.
        disable_telemetry: Switch off MLflow's usage telemetry unless the environment sets
            ``MLFLOW_DISABLE_TELEMETRY`` itself (it sends HTTP requests to mlflow.org).

    Raises:
        TrackingError: The store cannot be opened.
    """
    import mlflow

    if disable_telemetry and "MLFLOW_DISABLE_TELEMETRY" not in os.environ:
        os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
        from mlflow.telemetry import set_telemetry_client

        set_telemetry_client()  # re-reads the variable: drops the client before it sends anything

    scheme = tracking_uri.split(":", 1)[0].lower()
    root = Path(artifact_root).expanduser().resolve() if artifact_root is not None else None
    if scheme == "sqlite":
        db_path = _sqlite_path(tracking_uri)
        db_path.parent.mkdir(parents=True, exist_ok=True)
        if root is None:
            root = db_path.parent / DEFAULT_ARTIFACT_DIR
    elif scheme.startswith("postgresql"):
        ensure_postgres_database(tracking_uri)
    if root is not None:
        root.mkdir(parents=True, exist_ok=True)

    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    target = TrackingTarget(tracking_uri=tracking_uri, artifact_root=root)
    try:
        target.client().search_experiments(max_results=1)
    except Exception as exc:  # the stores raise driver, SQLAlchemy and MLflow errors alike
        raise TrackingError(f"cannot open the MLflow tracking store {target.display_uri()}: {exc}") from exc
    return target


def _sqlite_path(uri: str) -> Path:
    from sqlalchemy.engine import make_url

    database = make_url(uri).database
    if not database or database == ":memory:":
        raise TrackingError(f"{uri}: an in-memory SQLite tracking store would lose every run; give a file path")
    return Path(database).expanduser().resolve()


def ensure_postgres_database(url: str) -> bool:
    """Create the database named in a PostgreSQL URL if it does not exist.

    Returns:
        True if the database was created.
    """
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import OperationalError, ProgrammingError
    from sqlalchemy.pool import NullPool

    parsed = make_url(url)
    database = parsed.database
    if not database:
        raise TrackingError(f"{redact_uri(url)}: the PostgreSQL URL names no database")
    try:
        engine = create_engine(parsed, poolclass=NullPool)
    except ModuleNotFoundError as exc:
        raise TrackingError(
            f"{redact_uri(url)}: no driver for '{parsed.drivername}' ({exc}); "
            "use postgresql+psycopg://... (psycopg 3 is a leadscore dependency)"
        ) from exc
    try:
        with engine.connect():
            return False
    except OperationalError as exc:
        if "does not exist" not in str(exc.orig):
            raise TrackingError(f"cannot connect to {redact_uri(url)}: {exc.orig}") from exc
    finally:
        engine.dispose()

    admin = create_engine(parsed.set(database="postgres"), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            quoted = admin.dialect.identifier_preparer.quote_identifier(database)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
        logger.info("created PostgreSQL database %s", database)
        return True
    except ProgrammingError as exc:
        if "already exists" in str(exc.orig):  # created concurrently by another process
            return False
        raise TrackingError(f"cannot create database {database!r} on {redact_uri(url)}: {exc.orig}") from exc
    except OperationalError as exc:
        raise TrackingError(
            f"database {database!r} does not exist and the server's 'postgres' database is not reachable "
            f"to create it: {exc.orig}"
        ) from exc
    finally:
        admin.dispose()


def ensure_experiment(target: TrackingTarget, name: str) -> str:
    """Id of the experiment ``name``, created with its artifacts under the target's root."""
    from mlflow.exceptions import MlflowException

    client = target.client()
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        location = None
        if target.artifact_root is not None:
            location = (target.artifact_root / _slug(name)).as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException as exc:
            if exc.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)  # created concurrently
            if experiment is None:
                raise
    if experiment.lifecycle_stage != "active":
        raise TrackingError(
            f"experiment '{name}' is deleted in {target.display_uri()}; restore it "
            f"(mlflow experiments restore --experiment-id {experiment.experiment_id}) or choose another name"
        )
    return experiment.experiment_id


def _slug(name: str) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")
    return slug or "experiment"


# --------------------------------------------------------------------------------------------
# lineage


def data_files(paths: Iterable[str | Path]) -> list[tuple[str, Path]]:
    """The data files under ``paths`` as (stable name, path), sorted by name.

    A directory contributes every file below it, named relative to it; a file contributes its
    own name. Hidden files (including atomic-write temporaries) are skipped.
    """
    found: dict[str, Path] = {}
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            items = [
                (p.relative_to(path).as_posix(), p)
                for p in path.rglob("*")
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
            ]
        elif path.is_file():
            items = [(path.name, path)]
        else:
            raise FileNotFoundError(f"{path}: no such data file or directory")
        for name, file in items:
            if name in found and found[name] != file:
                raise ValueError(f"two data files share the name {name!r}: {found[name]} and {file}")
            found[name] = file
    return sorted(found.items())


def content_hash(paths: Iterable[str | Path]) -> str:
    """sha256 over the names, sizes and bytes of the data files under ``paths``.

    Stable across machines and directory locations: files are taken in name order and named
    relative to the directory given, so copying a data directory keeps its hash.
    """
    digest = hashlib.sha256()
    files = data_files(paths)
    if not files:
        raise ValueError(f"no data files under {[str(p) for p in paths]}")
    for name, path in files:
        encoded = name.encode("utf-8")
        digest.update(len(encoded).to_bytes(4, "big"))
        digest.update(encoded)
        digest.update(path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as fh:
            while chunk := fh.read(_HASH_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def _date_str(value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, str):
        return value
    return pd.Timestamp(value).date().isoformat()


# --------------------------------------------------------------------------------------------
# params


def flatten_params(values: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested mapping -> ``{"a.b.c": "value"}`` with JSON for non-string leaves.

    Values longer than MLflow's limit are cut with an explicit marker (the full config is in
    the ``config.yaml`` artifact).
    """
    out: dict[str, str] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, name))
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
        if len(text) > _MAX_PARAM_VALUE:
            marker = f"... [truncated, {len(text)} chars; see {CONFIG_ARTIFACT}]"
            text = text[: _MAX_PARAM_VALUE - len(marker)] + marker
        out[name] = text
    return out


def json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


def _config_dict(config: Any) -> dict[str, Any]:
    if config is None:
        return {}
    if hasattr(config, "model_dump"):  # pydantic models
        return config.model_dump(mode="json")
    if isinstance(config, Mapping):
        return json.loads(json.dumps(dict(config), default=str))
    raise TypeError(f"config must be a mapping or a pydantic model, got {type(config).__name__}")


def run_metrics(
    metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, Mapping[str, float]] | None,
    extra_metrics: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """All metrics of a training run under their logged names."""
    out: dict[str, float] = {}
    for key, value in (extra_metrics or {}).items():
        if "." not in key:
            raise ValueError(
                f"extra metric {key!r}: needs a namespace such as 'stage.{key}' (plain names are the model's)"
            )
        out[key] = float(value)
    for key, value in metrics.items():
        if "." in key:
            raise ValueError(f"model metric {key!r}: plain names only (dots mark baseline/promotion metrics)")
        out[key] = float(value)
    for baseline, values in (baseline_metrics or {}).items():
        if not re.fullmatch(r"[A-Za-z0-9_-]+", baseline):
            raise ValueError(f"baseline name {baseline!r}: use letters, digits, '_' or '-'")
        for key, value in values.items():
            name = f"{BASELINE_PREFIX}{baseline}.{key}"
            if name in out:
                raise ValueError(f"metric {name!r} given twice (baseline and extra metrics)")
            out[name] = float(value)
    return out


# --------------------------------------------------------------------------------------------
# the training run


def log_training_run(
    target: TrackingTarget,
    *,
    experiment: str,
    registered_model_name: str,
    scoring_model: Any,
    input_example: pd.DataFrame,
    test_rows: pd.DataFrame,
    metrics: Mapping[str, float],
    baseline_metrics: Mapping[str, Mapping[str, float]] | None = None,
    extra_metrics: Mapping[str, float] | None = None,
    params: Mapping[str, Any] | None = None,
    config: Any = None,
    lineage: DataLineage | None = None,
    figures: Mapping[str, Any] | None = None,
    artifacts: Mapping[str, pd.DataFrame | Mapping[str, Any]] | None = None,
    tags: Mapping[str, str] | None = None,
    run_name: str | None = None,
    example_rows: int = 5,
    tables: Mapping[str, pd.DataFrame] | None = None,
) -> TrainingRun:
    """Log one training run and register its pyfunc model as a new ``challenger`` version.

    Args:
        target: From :func:`configure_mlflow`.
        experiment: Experiment name (created under the target's artifact root if new).
        registered_model_name: Registered model receiving the new version.
        scoring_model: The trained scoring model (``predict``, ``input_columns``, ``spec``,
            ``metadata``).
        input_example: Rows with the model's input columns (the first ``example_rows`` are
            logged as the input example and used to infer the signature).
        test_rows: The test snapshots: ``lead_id``, ``as_of`` and their labels. Promotion
            re-evaluates the champion on exactly these rows.
        metrics: The model's test metrics, plain names (``roc_auc``, ``pr_auc`` ...).
        baseline_metrics: ``{baseline_name: {metric: value}}``, logged as
            ``baseline_<name>.<metric>``.
        extra_metrics: Other metrics under namespaced names (with a dot), e.g.
            ``stage.accuracy``; they are not compared by promotion.
        params: Hyperparameters and other run parameters (nested mappings are flattened).
        config: The modelling config (mapping or pydantic model): logged as ``config.yaml``
            and as ``config.*`` params.
        lineage: Data lineage (see :class:`DataLineage`).
        figures: ``{name: matplotlib Figure}`` logged under ``plots/``.
        artifacts: ``{artifact path: table or mapping}``: a DataFrame is written as CSV, a
            mapping as JSON (e.g. ``{"evaluation/grade_table.csv": grades}``).
        tags: Extra run tags.
        run_name: MLflow run name.
        example_rows: Rows of the logged input example.
        tables: ``{artifact path: DataFrame}`` written as Parquet (e.g. the drift reference,
            :data:`REFERENCE_ROWS_ARTIFACT`).
    """
    import mlflow

    missing = [c for c in ID_COLUMNS if c not in test_rows.columns]
    if missing:
        raise ValueError(f"test_rows lacks id columns {missing} (needs {list(ID_COLUMNS)} plus labels)")
    if test_rows.empty:
        raise ValueError("test_rows is empty: promotion needs the test snapshots")
    all_metrics = run_metrics(metrics, baseline_metrics, extra_metrics)
    config_dict = _config_dict(config)
    all_params = flatten_params(params or {})
    for source in (flatten_params(config_dict, "config"), lineage.params() if lineage else {}):
        clash = sorted(set(all_params) & set(source))
        if clash:
            raise ValueError(f"params {clash} clash with config/lineage params; rename them")
        all_params.update(source)

    experiment_id = ensure_experiment(target, experiment)
    run_tags = {"leadscore.registered_model": registered_model_name, **(tags or {})}
    if lineage is not None:
        run_tags["leadscore.data_hash"] = lineage.content_hash
    client = target.client()
    # Fluent logging uses the process-wide URI; make it the target's even if someone moved it.
    mlflow.set_tracking_uri(target.tracking_uri)
    mlflow.set_registry_uri(target.tracking_uri)
    with (
        mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=run_tags) as run,
        tempfile.TemporaryDirectory(prefix="leadscore-run-") as tmp,
    ):
        run_id = run.info.run_id
        if all_params:
            mlflow.log_params(all_params)
        if config_dict:
            mlflow.log_text(yaml.safe_dump(config_dict, sort_keys=False), CONFIG_ARTIFACT)
        if lineage is not None:
            mlflow.log_dict(lineage.to_dict(), LINEAGE_ARTIFACT)
        rows_path = write_table(test_rows.reset_index(drop=True), Path(tmp) / Path(TEST_ROWS_ARTIFACT).name)
        mlflow.log_artifact(str(rows_path), artifact_path=str(Path(TEST_ROWS_ARTIFACT).parent))
        for artifact_path, table in (tables or {}).items():
            if Path(artifact_path).suffix != ".parquet":
                raise ValueError(f"table artifact {artifact_path!r}: tables are written as .parquet")
            local = Path(tmp) / "tables" / artifact_path
            local.parent.mkdir(parents=True, exist_ok=True)
            written = write_table(table.reset_index(drop=True), local)
            parent = str(Path(artifact_path).parent)
            mlflow.log_artifact(str(written), artifact_path=None if parent == "." else parent)
        for name, figure in (figures or {}).items():
            file = name if Path(name).suffix in {".png", ".svg", ".pdf", ".jpg"} else f"{name}.png"
            mlflow.log_figure(figure, f"{PLOTS_DIR}/{file}")
        for artifact_path, content in (artifacts or {}).items():
            if isinstance(content, pd.DataFrame):
                mlflow.log_text(content.to_csv(index=False), artifact_path)
            else:
                mlflow.log_text(json.dumps(content, indent=2, sort_keys=True, default=json_default), artifact_path)

        model_meta = {"registered_model_name": registered_model_name}
        trained_at = (getattr(scoring_model, "metadata", None) or {}).get("trained_at")
        if trained_at is not None:
            model_meta["trained_at"] = str(trained_at)
        info = log_pyfunc_model(
            scoring_model,
            input_example=input_example,
            registered_model_name=registered_model_name,
            example_rows=example_rows,
            metadata=model_meta,
        )
        # Linking metrics to the logged model shows them on its page in the MLflow UI too.
        mlflow.log_metrics(all_metrics, model_id=info.model_id)
        version = info.registered_model_version
        if version is None:
            raise TrackingError(f"model of run {run_id} was not registered as '{registered_model_name}'")
        client.set_registered_model_alias(registered_model_name, CHALLENGER_ALIAS, str(version))
        if lineage is not None:
            client.set_model_version_tag(
                registered_model_name, str(version), "leadscore.data_hash", lineage.content_hash
            )
        if trained_at is not None:
            client.set_model_version_tag(registered_model_name, str(version), "leadscore.trained_at", str(trained_at))
        artifact_uri = run.info.artifact_uri
    logger.info("logged run %s: %s version %s (challenger)", run_id, registered_model_name, version)
    return TrainingRun(
        run_id=run_id,
        experiment_id=experiment_id,
        model_id=info.model_id,
        registered_model_name=registered_model_name,
        version=int(version),
        model_uri=f"models:/{registered_model_name}/{version}",
        artifact_uri=artifact_uri,
    )


# --------------------------------------------------------------------------------------------
# adapter for models.fit.training.TrainingResult

LEADSCORE_MODEL = "leadscore"


def lineage_from_split(
    data_dir: str | Path, split_summary: Mapping[str, Any], row_counts: Mapping[str, int] | None = None
) -> DataLineage:
    """Lineage of a data directory with the row counts and as-of spans of a readiness split.

    ``split_summary`` is ``Split.summary()`` (or its ``readiness`` part); ``row_counts`` adds
    other counts (e.g. raw leads and events).
    """
    readiness = split_summary.get("readiness", split_summary)
    counts: dict[str, int] = dict(row_counts or {})
    spans: dict[str, tuple[Any, Any]] = {}
    for part in ("train", "valid", "test"):
        if f"{part}_rows" in readiness:
            counts[part] = int(readiness[f"{part}_rows"])
        span = readiness.get(f"{part}_as_of_range")
        if span:
            spans[part] = (span[0], span[1])
    return DataLineage.from_data_dir(data_dir, row_counts=counts, date_spans=spans)


def leakage_metrics(report: Any) -> dict[str, float]:
    """Run metrics of a :class:`models.judge.leakage.LeakageReport` (the probe runs before any model is fitted).

    ``leakage.flagged``: features the probe flagged. A logged run got past the probe, so each of them is
    acknowledged in ``train.leakage.acknowledge``: a non-zero value means someone vouched for a feature
    that predicts the label on its own (worth a look in ``evaluation/leakage.json``).
    ``leakage.max_feature_auc``: the highest single-feature AUC, i.e. how close the most predictive
    feature came to the threshold (absent when no feature has an AUC). ``leakage.rows_probed``.
    """
    aucs = [f.auc for f in report.features if not math.isnan(f.auc)]
    out = {
        "leakage.flagged": float(sum(1 for f in report.features if f.flagged)),
        "leakage.rows_probed": float(report.rows_probed),
    }
    if aucs:
        out["leakage.max_feature_auc"] = float(max(aucs))
    return out


def log_training_result(
    target: TrackingTarget,
    result: Any,
    *,
    experiment: str,
    registered_model_name: str,
    data_dir: str | Path | None = None,
    row_counts: Mapping[str, int] | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> TrainingRun:
    """Log a :class:`models.fit.training.TrainingResult` with :func:`log_training_run`.

    Maps the result onto the run layout: the leadscore readiness metrics under plain names,
    ``baseline_<name>.*`` for the baselines, ``leadscore_uncalibrated.*``, ``stage.*`` (numeric
    stage metrics), ``timing.*`` (seconds), ``leakage.*`` (:func:`leakage_metrics`, when the
    probe ran); the config; best iterations, calibration and split facts as params; the grade
    table, stage metrics, split summary and leakage report (``evaluation/leakage.json``) as
    artifacts; the readiness test snapshots (ids + labels) for promotion.
    """
    from features.spec import LABEL_COLUMNS

    readiness = dict(result.readiness_metrics)
    if LEADSCORE_MODEL not in readiness:
        raise ValueError(f"training result has no '{LEADSCORE_MODEL}' metrics (has {sorted(readiness)})")
    own = readiness.pop(LEADSCORE_MODEL)
    extra: dict[str, float] = {}
    uncalibrated = readiness.pop(f"{LEADSCORE_MODEL}_uncalibrated", None)
    if uncalibrated:
        extra.update({f"{LEADSCORE_MODEL}_uncalibrated.{k}": float(v) for k, v in uncalibrated.items()})
    stage_metrics = result.stage_metrics or {}
    extra.update(
        {
            f"stage.{k}": float(v)
            for k, v in stage_metrics.items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
    )
    extra.update({f"timing.{k}": float(v) for k, v in (result.timings or {}).items()})
    leakage = getattr(result, "leakage", None)
    if leakage is not None:
        extra.update(leakage_metrics(leakage))

    meta = getattr(result.model, "metadata", {}) or {}
    split_summary = result.split.summary()
    readiness_split = split_summary.get("readiness") or {}
    params: dict[str, Any] = {
        "readiness.best_iteration": meta.get("readiness_best_iteration"),
        "stage.best_iteration": meta.get("stage_best_iteration"),
        "calibration.method": (meta.get("calibration") or {}).get("method"),
        "split.gap_days": readiness_split.get("gap_days"),
        "split.label_window_days": readiness_split.get("label_window_days"),
        "split.valid_strategy": readiness_split.get("valid_strategy"),
        "features.count": len(result.spec.features),
        "features.categorical": len(result.spec.categorical),
    }
    params = {k: v for k, v in params.items() if v is not None}

    artifacts: dict[str, pd.DataFrame | Mapping[str, Any]] = {"evaluation/split.json": split_summary}
    if getattr(result, "grade_table", None) is not None:
        artifacts["evaluation/grade_table.csv"] = result.grade_table.reset_index()
    if stage_metrics:
        artifacts["evaluation/stage_metrics.json"] = stage_metrics
    if getattr(result, "notes", None):
        artifacts["evaluation/notes.json"] = {"notes": list(result.notes)}
    if leakage is not None:
        artifacts[LEAKAGE_ARTIFACT] = leakage.to_dict()
    figures = dict(result.figures or {})
    effects = getattr(result.model, "effects", None)
    if effects is not None:
        # the champion's effect table, for the report: load_effects(...) in models.explain.effects
        from models.judge.plots import effects_forest_figure

        artifacts[EFFECTS_ARTIFACT] = effects
        figures["effects_forest"] = effects_forest_figure(effects)

    test = result.test_frame
    test_rows = test[[c for c in (*ID_COLUMNS, *LABEL_COLUMNS) if c in test.columns]]
    lineage = lineage_from_split(data_dir, split_summary, row_counts) if data_dir is not None else None
    reference = drift_reference_rows(result)
    return log_training_run(
        target,
        experiment=experiment,
        registered_model_name=registered_model_name,
        scoring_model=result.model,
        input_example=test,
        test_rows=test_rows,
        metrics=own,
        baseline_metrics=readiness,
        extra_metrics=extra,
        params=params,
        config=result.config,
        lineage=lineage,
        figures=figures,
        artifacts=artifacts,
        tags=tags,
        run_name=run_name,
        tables={REFERENCE_ROWS_ARTIFACT: reference} if reference is not None else None,
    )


def drift_reference_rows(result: Any) -> pd.DataFrame | None:
    """The drift reference of a training result: readiness training rows at the newest training dates.

    ``lead_id``, ``as_of``, every model feature, and the trained model's ``readiness`` and ``score`` on them
    (:func:`models.judge.reference.reference_population` with ``config.monitoring``). ``None`` when the
    result has no training rows (nothing to compare with).
    """
    from models.judge.reference import reference_population

    split = getattr(getattr(result, "split", None), "readiness", None)
    train = getattr(result, "reference_source", None)
    if train is None:  # trained on one machine: the whole training frame is at hand
        train = getattr(split, "train", None)
    if train is None or len(train) == 0 or not hasattr(result.model, "predict_arrays"):
        return None
    monitoring = result.config.monitoring
    columns = [c for c in (*ID_COLUMNS, *result.spec.features) if c in train.columns]
    rows = reference_population(
        train[columns],
        last_snapshots=monitoring.reference_snapshots,
        max_rows=monitoring.reference_max_rows,
        seed=result.config.seed,
    )
    outputs = result.model.predict_arrays(rows)
    rows["readiness"] = outputs["readiness"]
    rows["score"] = outputs["score"]
    return rows


def result_evaluator(result: Any) -> Any:
    """``evaluate(model, test_rows)`` for promotion, scoring rows of ``result``'s test snapshots.

    The rows (``lead_id``, ``as_of``) are looked up in the result's test frame (features and
    labels); rows it does not hold are an error, as the champion must be scored on exactly the
    challenger's rows.
    """
    frame = result.test_frame
    keys = list(ID_COLUMNS)

    def evaluate(model: Any, rows: pd.DataFrame) -> Mapping[str, float]:
        matched = frame.merge(rows[keys].drop_duplicates(), on=keys, how="inner", validate="one_to_one")
        if len(matched) != len(rows):
            raise ValueError(
                f"{len(rows) - len(matched)} of {len(rows)} test rows are not in this training result's test "
                "snapshots: rebuild their features from the data to compare on them"
            )
        return result.evaluate_on(model, matched)

    return evaluate
