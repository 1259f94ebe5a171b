"""The one MLflow pyfunc model that carries everything scoring needs.

The logged model holds a pickled :class:`models.fit.scoring.ScoringModel` (feature preprocessing,
calibrated readiness model, stage model, explainer) as a pyfunc artifact. It is logged as
*model from code* (MLflow's recommended format since 3.0): the model's code file only imports
:class:`LeadscorePyfunc` from this installed package, so MLflow never cloudpickles a wrapper
object. The scoring model itself is pickled by reference to the ``models.*`` / ``features.*``
modules, which is why the ``leadscore`` package (same version) must be installed wherever the
model is loaded; no ``code_paths`` are bundled.

Serving loads the registered model once and calls the unwrapped scoring model directly::

    scoring_model, info = load_scoring_model("models:/leadscore@champion")

or, from a loaded pyfunc, ``pyfunc_model.unwrap_python_model().scoring_model``.

Network: logging passes explicit ``pip_requirements`` (pinned to the running environment), so
MLflow does not run its requirement inference (a subprocess that re-imports the model), and
it does not lock requirements unless ``MLFLOW_LOCK_MODEL_DEPENDENCIES`` is set. MLflow's usage
telemetry is switched off by :func:`models.package.tracking.configure_mlflow`.
"""

from __future__ import annotations

import importlib.metadata
import pickle
import re
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.pyfunc import PyFuncModel, PythonModel, PythonModelContext

from models.package.uris import redact_uri

SCORING_MODEL_ARTIFACT = "scoring_model"
SCORING_MODEL_FILE = "scoring_model.pkl"
PYFUNC_ENTRY_FILE = "leadscore_pyfunc.py"
MODEL_NAME_IN_RUN = "model"
METADATA_KEY = "leadscore"

# Distributions the unpickled scoring model imports at load time. Pinned to the versions in
# the training environment: LightGBM and scikit-learn pickles are not portable across versions.
RUNTIME_DISTRIBUTIONS = (
    "leadscore",
    "numpy",
    "pandas",
    "pyarrow",
    "scipy",
    "scikit-learn",
    "lightgbm",
    "pydantic",
    "pyyaml",
)

_PYFUNC_ENTRY_CODE = '''"""MLflow model-from-code entry of the leadscore pyfunc (written by models.package.bundle)."""

import mlflow

from models.package.bundle import LeadscorePyfunc

mlflow.models.set_model(LeadscorePyfunc())
'''

_MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))?/?$")
_LOGGED_MODEL_URI = re.compile(r"^models:/(m-[0-9a-f]+)/?$")
_INTEGER_HINT = "Hint: Inferred schema contains integer column"


class LeadscorePyfunc(PythonModel):
    """MLflow pyfunc wrapper around a pickled scoring model.

    ``predict`` returns the scoring model's prediction frame (readiness, score, grade, stage,
    ``stage_proba_<label>`` ...). Use :attr:`scoring_model` for everything else.
    """

    def __init__(self) -> None:
        self._scoring_model: Any = None

    def load_context(self, context: PythonModelContext) -> None:
        try:
            path = context.artifacts[SCORING_MODEL_ARTIFACT]
        except KeyError:
            raise mlflow.exceptions.MlflowException(
                f"leadscore pyfunc model has no '{SCORING_MODEL_ARTIFACT}' artifact "
                f"(artifacts: {sorted(context.artifacts)}); it was not logged by models.package.bundle"
            ) from None
        self._scoring_model = read_scoring_model(path)

    @property
    def scoring_model(self) -> Any:
        """The unwrapped scoring model (raises if the pyfunc has not been loaded)."""
        if self._scoring_model is None:
            raise RuntimeError("LeadscorePyfunc has no scoring model: load it with mlflow.pyfunc.load_model")
        return self._scoring_model

    def predict(
        self,
        context: PythonModelContext | None,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> pd.DataFrame:
        return self.scoring_model.predict(model_input)


@dataclass(frozen=True)
class LoadedModelInfo:
    """Where a loaded scoring model came from.

    ``name``/``version`` are set when the model was loaded through the registry
    (``models:/name@alias`` or ``models:/name/version``).
    """

    model_uri: str
    name: str | None
    version: int | None
    run_id: str | None
    model_id: str | None
    aliases: tuple[str, ...] = ()
    trained_at: str | None = None
    metrics: dict[str, float] = field(default_factory=dict)


def write_scoring_model(scoring_model: Any, path: str | Path) -> Path:
    """Pickle a scoring model (classes are stored by reference to the installed package)."""
    path = Path(path)
    with path.open("wb") as fh:
        pickle.dump(scoring_model, fh, protocol=pickle.HIGHEST_PROTOCOL)
    return path


# Models logged before models/ was grouped into subpackages pickled their classes under the old flat
# module names; they still load.
LEGACY_MODULES = {
    "models.encoding": "models.fit.encoding",
    "models.fastpredict": "models.fit.fastpredict",
    "models.readiness": "models.fit.readiness",
    "models.scoring": "models.fit.scoring",
    "models.stage": "models.fit.stage",
}


class _ScoringModelUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(LEGACY_MODULES.get(module, module), name)


def read_scoring_model(path: str | Path) -> Any:
    """Unpickle a scoring model written by :func:`write_scoring_model`.

    Only load models from a tracking store you trust: unpickling runs code.
    """
    path = Path(path)
    try:
        with path.open("rb") as fh:
            model = _ScoringModelUnpickler(fh).load()
    except (ModuleNotFoundError, AttributeError) as exc:
        raise RuntimeError(
            f"{path}: cannot unpickle the scoring model ({exc}); the installed leadscore package "
            "does not provide the classes it was trained with. Install the leadscore version the "
            "model was logged with (see its requirements.txt)"
        ) from exc
    if not callable(getattr(model, "predict", None)):
        raise RuntimeError(f"{path}: unpickled {type(model).__name__} has no predict(); not a scoring model")
    return model


def pip_requirements() -> list[str]:
    """Pinned requirements for the logged model, taken from the running environment."""
    reqs = []
    for dist in RUNTIME_DISTRIBUTIONS:
        try:
            reqs.append(f"{dist}=={importlib.metadata.version(dist)}")
        except importlib.metadata.PackageNotFoundError:
            # Not every distribution is imported by every scoring model (e.g. scipy comes with
            # scikit-learn); one that is missing here cannot be needed by the pickle either.
            continue
    reqs.append(f"mlflow=={importlib.metadata.version('mlflow')}")
    return reqs


def signature_frame(scoring_model: Any, frame: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """A small input example in the types the signature declares.

    Numeric (and boolean) features become float64 so that missing values at scoring time do not
    break MLflow's schema enforcement (an integer column cannot hold NaN); other features become
    strings (missing stays missing).
    """
    columns = list(scoring_model.input_columns)
    if not columns:
        raise ValueError("scoring model has no input columns")
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"input example lacks the scoring model's input columns {missing}")
    if frame.empty:
        raise ValueError("input example has no rows")
    example = frame.loc[:, columns].head(rows).reset_index(drop=True)
    out = {}
    for col in columns:
        values = example[col]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[col] = values.astype("float64")
        elif pd.api.types.is_datetime64_any_dtype(values):
            out[col] = values
        else:
            out[col] = values.astype("str")
    return pd.DataFrame(out)


def model_signature(scoring_model: Any, example: pd.DataFrame) -> ModelSignature:
    """Signature from the input example and the scoring model's output on it."""
    output = scoring_model.predict(example)
    with warnings.catch_warnings():
        # The hint concerns integer inputs with missing values; inputs are float64 here and
        # integer *outputs* (the 0-100 score) never hold missing values.
        warnings.filterwarnings("ignore", message=_INTEGER_HINT, category=UserWarning)
        return infer_signature(example, output)


def log_pyfunc_model(
    scoring_model: Any,
    *,
    input_example: pd.DataFrame,
    registered_model_name: str | None,
    example_rows: int = 5,
    metadata: Mapping[str, Any] | None = None,
    name: str = MODEL_NAME_IN_RUN,
) -> ModelInfo:
    """Log the scoring model as the run's pyfunc model (needs an active run).

    Args:
        scoring_model: Object with ``predict(df) -> DataFrame`` and ``input_columns``.
        input_example: Rows with at least the model's input columns; the first
            ``example_rows`` become the logged input example.
        registered_model_name: Register the model under this name (new version), or ``None``.
        metadata: Extra JSON-able metadata stored in the MLmodel file under ``leadscore``.
        name: Name of the logged model within the run.

    Returns:
        MLflow's ModelInfo (``registered_model_version`` is set when registered).
    """
    if mlflow.active_run() is None:
        raise RuntimeError("log_pyfunc_model needs an active MLflow run")
    example = signature_frame(scoring_model, input_example, rows=example_rows)
    signature = model_signature(scoring_model, example)
    spec = getattr(scoring_model, "spec", None)
    model_meta: dict[str, Any] = {
        "input_columns": list(scoring_model.input_columns),
        "scoring_model_class": f"{type(scoring_model).__module__}.{type(scoring_model).__qualname__}",
    }
    if spec is not None and hasattr(spec, "to_json"):
        model_meta["feature_spec"] = spec.to_json()
    model_meta.update(metadata or {})
    with tempfile.TemporaryDirectory(prefix="leadscore-model-") as tmp:
        tmp_dir = Path(tmp)
        entry = tmp_dir / PYFUNC_ENTRY_FILE
        entry.write_text(_PYFUNC_ENTRY_CODE, encoding="utf-8")
        pickled = write_scoring_model(scoring_model, tmp_dir / SCORING_MODEL_FILE)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(entry),
            artifacts={SCORING_MODEL_ARTIFACT: str(pickled)},
            signature=signature,
            input_example=example,
            pip_requirements=pip_requirements(),
            registered_model_name=registered_model_name,
            metadata={METADATA_KEY: model_meta},
        )


def unwrap_scoring_model(pyfunc_model: PyFuncModel) -> Any:
    """The scoring model inside a loaded leadscore pyfunc model."""
    python_model = pyfunc_model.unwrap_python_model()
    if not isinstance(python_model, LeadscorePyfunc):
        raise TypeError(f"not a leadscore model: the pyfunc wraps {type(python_model).__name__}")
    return python_model.scoring_model


def parse_models_uri(model_uri: str) -> tuple[str, str | None, int | None] | None:
    """Split ``models:/name@alias`` / ``models:/name/version`` into (name, alias, version).

    Returns ``None`` for URIs that do not name a registered model (``runs:/``, paths, and
    MLflow 3 logged-model ids ``models:/m-<id>``).
    """
    match = _MODELS_URI.match(model_uri)
    if match is None:
        return None
    name, alias, version = match.group("name"), match.group("alias"), match.group("version")
    if alias is None and version is None:
        return None  # models:/<logged model id>
    return name, alias, int(version) if version is not None else None


def load_scoring_model(
    model_uri: str,
    *,
    tracking_uri: str | None = None,
    registry_uri: str | None = None,
) -> tuple[Any, LoadedModelInfo]:
    """Load a logged leadscore model and return the unwrapped scoring model with its provenance.

    An alias is resolved to a version first and that exact version is loaded, so the returned
    info always describes the loaded model even if the alias moves meanwhile.

    Args:
        model_uri: ``models:/name@alias``, ``models:/name/version``, ``models:/m-<id>``,
            ``runs:/<run_id>/model`` or a local path.
        tracking_uri: Tracking store to use (default: MLflow's current one).
        registry_uri: Model registry to use (default: the tracking URI).
    """

    tracking_uri = tracking_uri or mlflow.get_tracking_uri()
    registry_uri = registry_uri or tracking_uri
    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=registry_uri)
    name: str | None = None
    version: int | None = None
    aliases: tuple[str, ...] = ()
    parsed = parse_models_uri(model_uri)
    # Resolve models:/ URIs to the artifact location with *this* client: MLflow's own models:/
    # resolution uses the process-wide registry URI whatever tracking_uri is passed.
    source_uri = model_uri
    if parsed is not None:
        name, alias, version = parsed
        try:
            mv = (
                client.get_model_version_by_alias(name, alias)
                if alias is not None
                else client.get_model_version(name, str(version))
            )
        except mlflow.exceptions.MlflowException as exc:
            what = f"alias '{alias}'" if alias is not None else f"version {version}"
            raise LookupError(
                f"registered model '{name}' has no {what} in {redact_uri(registry_uri)}: {exc.message}"
            ) from exc
        version = int(mv.version)
        aliases = tuple(sorted(mv.aliases or ()))
        source_uri = client.get_model_version_download_uri(name, str(version))
    elif (logged := _LOGGED_MODEL_URI.match(model_uri)) is not None:
        source_uri = client.get_logged_model(logged.group(1)).artifact_location
    with tempfile.TemporaryDirectory(prefix="leadscore-load-") as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=source_uri, dst_path=tmp, tracking_uri=tracking_uri, registry_uri=registry_uri
        )
        # The scoring model is unpickled into memory in load_context, so the files may go.
        pyfunc_model = mlflow.pyfunc.load_model(local)
    scoring_model = unwrap_scoring_model(pyfunc_model)
    meta = pyfunc_model.metadata
    run_id = meta.run_id
    metrics: dict[str, float] = {}
    started: str | None = None
    if run_id:
        run = client.get_run(run_id)
        metrics = model_metrics(run.data.metrics)
        started = pd.Timestamp(run.info.start_time, unit="ms", tz="UTC").isoformat()
    model_metadata = getattr(scoring_model, "metadata", None) or {}
    if not metrics and isinstance(model_metadata.get("metrics"), Mapping):
        metrics = {
            k: float(v) for k, v in model_metadata["metrics"].items() if isinstance(v, int | float) and "." not in k
        }
    trained_at = model_metadata.get("trained_at")
    info = LoadedModelInfo(
        model_uri=model_uri,
        name=name,
        version=version,
        run_id=run_id,
        model_id=getattr(meta, "model_id", None),
        aliases=aliases,
        trained_at=str(trained_at) if trained_at is not None else started,
        metrics=metrics,
    )
    return scoring_model, info


def model_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """The model's own metrics from a run: plain names only.

    Namespaced metrics (``baseline_logreg.roc_auc``, ``promotion.delta`` ...) contain a dot and
    describe something else than the logged model.
    """
    return {k: float(v) for k, v in metrics.items() if "." not in k}
