"""The scheduled deployments of leadscore's flows, in one table, and their creation on a Prefect server.

``DEPLOYMENTS`` lists every deployment: its key (also the ``--<key>-cron`` option of ``leadscore deploy``
and the ``prefect.yaml`` entry), the flow's import path, the deployment name, the default cron schedule
and how its parameters are built from :class:`~pipelines.settings.Settings` and the data directory.

Why work-pool deployments with module-path entrypoints (``pipelines.flows.train_flow``):

* the deployment lives on the Prefect server independently of any process: a ``process`` worker
  (``prefect worker start --pool leadscore``) runs each flow run in its own subprocess, and the worker can be
  restarted, supervised (systemd) or replaced without re-creating deployments (``flow.serve`` ties the
  deployments to the serving process and pauses their schedules when it stops);
* a module path is imported from the installed ``leadscore`` package, so the worker needs neither a copy
  of the source tree nor a working directory, image or remote storage (Prefect's ``deploy`` accepts module
  paths without storage);
* the same deployments can still be served without a worker (``leadscore deploy --serve``, i.e.
  ``prefect.serve``) on a single machine.

Parameters are resolved when the deployments are created (absolute paths, the tracking and store URIs),
so a run does not depend on the worker's working directory or environment.
"""

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from pipelines.settings import Settings

WORK_POOL = "leadscore"
WORK_POOL_TYPE = "process"
TAGS = ("leadscore",)
# Passed to every flow-run subprocess (the worker's own environment is inherited as well): the same
# offline and CPU-friendly defaults the CLI applies (pipelines/runtime.py), unless the worker sets them.
RUN_ENV_KEYS = ("OMP_WAIT_POLICY", "MLFLOW_DISABLE_TELEMETRY", "MLFLOW_ENABLE_ASYNC_LOGGING", "DO_NOT_TRACK")


class DeploymentError(RuntimeError):
    """The deployments cannot be created (no Prefect API, unknown deployment, bad schedule...)."""


@dataclass(frozen=True)
class DeployContext:
    """What deployment parameters are built from: the settings, the data directory, the modelling config.

    ``config`` is the modelling config as JSON (``ProjectConfig.model_dump(mode="json")``) when
    ``leadscore deploy --config FILE`` was given, else ``None`` (the runs use the shipped defaults).
    """

    settings: Settings
    data_dir: Path
    config: dict[str, Any] | None = None


ParameterBuilder = Callable[[DeployContext], dict[str, Any]]


@dataclass(frozen=True)
class DeploymentSpec:
    """One scheduled deployment of a leadscore flow.

    Attributes:
        key: Short name: ``leadscore deploy --<key>-cron`` and the flow name (``score-batch`` ...).
        entrypoint: Module path of the flow object (``pipelines.flows.score_batch_flow``).
        name: Deployment name; runs are addressed as ``<flow name>/<name>``.
        cron: Default schedule (cron, UTC unless the server is configured otherwise).
        parameters: ``(DeployContext) -> flow parameters`` (JSON-compatible values).
        description: Shown in the Prefect UI.
        cron_option: ``leadscore deploy`` option for the schedule when not ``--<key>-cron``.
    """

    key: str
    entrypoint: str
    name: str
    cron: str
    parameters: ParameterBuilder
    description: str = ""
    tags: tuple[str, ...] = field(default=TAGS)
    cron_option: str = ""

    @property
    def option(self) -> str:
        """The ``leadscore deploy`` option overriding the schedule (``--<key>-cron`` unless set)."""
        return self.cron_option or f"--{self.key}-cron"

    def load_flow(self) -> Any:
        """The Prefect flow object behind :attr:`entrypoint`."""
        module, _, attr = self.entrypoint.rpartition(".")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise DeploymentError(f"deployment '{self.key}': cannot import its flow {self.entrypoint} ({exc})") from exc

    @property
    def full_name(self) -> str:
        return f"{self.key}/{self.name}"


def _common(ctx: DeployContext) -> dict[str, Any]:
    settings = ctx.settings
    return {
        "data_dir": str(ctx.data_dir.expanduser().resolve()),
        "tracking_uri": settings.tracking_uri,
        "artifact_root": str(settings.artifact_root),
        "model_name": settings.model_name,
    }


def _cluster(ctx: DeployContext) -> dict[str, Any]:
    """``cluster`` = ``LEADSCORE_DASK_ADDRESS`` for a partitioned DATA (plain data stays on the worker's machine)."""
    from features.partitioned import is_partitioned

    address = ctx.settings.dask_address
    return {"cluster": address} if address and is_partitioned(ctx.data_dir) else {}


def score_batch_parameters(ctx: DeployContext) -> dict[str, Any]:
    """``score-batch``: every open lead of DATA scored by the champion, written to the score store."""
    settings = ctx.settings
    return {**_common(ctx), "store_url": settings.score_store_url, "alias": settings.champion_alias, **_cluster(ctx)}


def train_parameters(ctx: DeployContext) -> dict[str, Any]:
    """``train``: retrain on DATA with the modelling config; promotion under the guardrails."""
    return {
        **_common(ctx),
        **_cluster(ctx),
        "work_dir": str(ctx.settings.home_dir / "work"),
        "config": ctx.config,
        "experiment": ctx.settings.experiment_name,
    }


def monitor_parameters(ctx: DeployContext) -> dict[str, Any]:
    """``monitor``: drift and matured performance of what was served; results under ``LEADSCORE_HOME/monitor``.

    The alert webhook is not stored in the deployment: the run reads ``LEADSCORE_ALERT_WEBHOOK_URL`` where it runs.
    """
    settings = ctx.settings
    return {
        **_common(ctx),
        "store_url": settings.score_store_url,
        "alias": settings.champion_alias,
        "result_dir": str(settings.monitor_dir),
        "experiment": settings.experiment_name,
    }


def report_parameters(ctx: DeployContext) -> dict[str, Any]:
    """``report``: the alignment report for sales and marketing, written to ``LEADSCORE_HOME/report``."""
    settings = ctx.settings
    return {
        **_common(ctx),
        "out": str(settings.report_path),
        "store_url": settings.score_store_url,
        "alias": settings.champion_alias,
        "experiment": settings.experiment_name,
    }


#: Every deployment ``leadscore deploy`` creates (and ``prefect.yaml`` declares), in this order.
DEPLOYMENTS: tuple[DeploymentSpec, ...] = (
    DeploymentSpec(
        key="score-batch",
        entrypoint="pipelines.flows.score_batch_flow",
        name="score-batch-nightly",
        cron="0 2 * * *",
        parameters=score_batch_parameters,
        description="Score every open lead with the champion, decide handoffs, write the batch (nightly).",
        cron_option="--score-cron",
    ),
    DeploymentSpec(
        key="train",
        entrypoint="pipelines.flows.train_flow",
        name="train-weekly",
        cron="0 3 * * 0",
        parameters=train_parameters,
        description="Retrain, compare with the champion on the newest holdout, promote only under the guardrails.",
    ),
    DeploymentSpec(
        key="monitor",
        entrypoint="pipelines.flows.monitor_flow",
        name="monitor-daily",
        cron="0 4 * * *",
        parameters=monitor_parameters,
        description="Drift of the scored leads and matured performance of the served scores; alerts (daily).",
    ),
    DeploymentSpec(
        key="report",
        entrypoint="pipelines.flows.report_flow",
        name="report-weekly",
        cron="0 6 * * 1",
        parameters=report_parameters,
        description="The alignment report for sales and marketing (weekly, Monday morning).",
    ),
)


def deployment_specs(keys: Sequence[str] | None = None) -> list[DeploymentSpec]:
    """The rows of :data:`DEPLOYMENTS` (all, or those named by ``keys``)."""
    if keys is None:
        return list(DEPLOYMENTS)
    by_key = {spec.key: spec for spec in DEPLOYMENTS}
    unknown = [k for k in keys if k not in by_key]
    if unknown:
        raise DeploymentError(f"unknown deployment(s) {unknown}; known: {sorted(by_key)}")
    return [by_key[k] for k in keys]


def check_crons(crons: Mapping[str, str | None]) -> dict[str, str]:
    """Validate cron overrides (``None`` = the default); an override for a missing deployment is an error."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    known = {spec.key: spec for spec in DEPLOYMENTS}
    out: dict[str, str] = {}
    for key, cron in crons.items():
        if cron is None:
            continue
        if key not in known:
            raise DeploymentError(
                f"--{key}-cron given, but this installation has no '{key}' deployment (deployments: {sorted(known)})"
            )
        try:
            CronSchedule(cron=cron)
        except ValidationError:
            raise DeploymentError(
                f"{known[key].option}: '{cron}' is not a cron expression (e.g. '0 2 * * *')"
            ) from None
        out[key] = cron
    return out


@dataclass(frozen=True)
class PlannedDeployment:
    """A deployment ready to be created: the row, its schedule and its resolved parameters."""

    spec: DeploymentSpec
    cron: str
    parameters: dict[str, Any]


def plan_deployments(
    settings: Settings,
    data_dir: Path,
    crons: Mapping[str, str | None] | None = None,
    config_path: Path | None = None,
) -> list[PlannedDeployment]:
    """Every row of :data:`DEPLOYMENTS` with its schedule (override or default) and parameters.

    Raises:
        DeploymentError: no contract in ``data_dir``, a bad cron; ConfigError: a bad ``config_path``.
    """
    data_dir = Path(data_dir)
    if not (data_dir / "contract.yaml").is_file():
        raise DeploymentError(
            f"{data_dir}: not a leadscore data directory (no contract.yaml); create one with "
            "leadscore generate or leadscore import, or pass --data"
        )
    overrides = check_crons(crons or {})
    config = None
    if config_path is not None:
        from pipelines.config import load_config

        config = load_config(config_path).model_dump(mode="json")
    ctx = DeployContext(settings, data_dir, config)
    return [PlannedDeployment(spec, overrides.get(spec.key, spec.cron), spec.parameters(ctx)) for spec in DEPLOYMENTS]


def run_env() -> dict[str, str]:
    """Environment for flow-run subprocesses (see :data:`RUN_ENV_KEYS`)."""
    from pipelines.runtime import MLFLOW_DEFAULTS, OPENMP_DEFAULTS, PREFECT_DEFAULTS

    defaults = {**PREFECT_DEFAULTS, **OPENMP_DEFAULTS, **MLFLOW_DEFAULTS}
    return {key: defaults[key] for key in RUN_ENV_KEYS if key in defaults}


def prefect_api_url() -> str:
    """``PREFECT_API_URL`` (environment or active Prefect profile), or a clear error if unset."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    if not url:
        raise DeploymentError(
            "PREFECT_API_URL is not set: deployments need a Prefect server. Start one with "
            "'prefect server start' and set PREFECT_API_URL=http://127.0.0.1:4200/api "
            "(see docs/operations.md)"
        )
    return str(url)


def check_api(url: str, timeout: float = 10.0) -> None:
    """Fail with a clear message unless the Prefect API at ``url`` answers its health check."""
    import httpx

    try:
        response = httpx.get(url.rstrip("/") + "/health", timeout=timeout)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise DeploymentError(
            f"the Prefect API at PREFECT_API_URL={url} is not reachable ({exc}); is 'prefect server start' "
            "running there? (see docs/operations.md)"
        ) from exc


def ensure_work_pool(name: str = WORK_POOL) -> bool:
    """Create the ``process`` work pool ``name`` if it does not exist; True if it was created."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=WORK_POOL_TYPE,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="leadscore flows (leadscore deploy)",
                )
            )
            return True
        if pool.type != WORK_POOL_TYPE:
            raise DeploymentError(
                f"work pool '{name}' exists with type '{pool.type}', expected '{WORK_POOL_TYPE}': "
                "delete it or choose another pool with --pool"
            )
    return False


def to_runner_deployments(planned: Sequence[PlannedDeployment], work_pool: str | None = WORK_POOL) -> list[Any]:
    """Prefect ``RunnerDeployment`` objects (module-path entrypoints) for ``prefect.deploy`` / ``prefect.serve``."""
    from prefect.deployments.runner import EntrypointType

    deployments = []
    for item in planned:
        spec = item.spec
        deployments.append(
            spec.load_flow().to_deployment(
                name=spec.name,
                cron=item.cron,
                parameters=item.parameters,
                description=spec.description,
                tags=list(spec.tags),
                work_pool_name=work_pool,
                job_variables={"env": run_env()} if work_pool else None,
                entrypoint_type=EntrypointType.MODULE_PATH,
            )
        )
    return deployments


@dataclass(frozen=True)
class CreatedDeployment:
    full_name: str
    deployment_id: str
    cron: str
    parameters: dict[str, Any]


def create_deployments(
    settings: Settings,
    data_dir: Path,
    crons: Mapping[str, str | None] | None = None,
    *,
    config_path: Path | None = None,
    work_pool: str = WORK_POOL,
) -> list[CreatedDeployment]:
    """Create (or update, by name) every deployment of :data:`DEPLOYMENTS` on the Prefect API.

    Raises:
        DeploymentError: no or unreachable ``PREFECT_API_URL``, a bad cron, a data directory without contract.
    """
    planned = plan_deployments(settings, data_dir, crons, config_path)
    check_api(prefect_api_url())
    ensure_work_pool(work_pool)
    from prefect import deploy

    # cast: Prefect's sync/async dual API types the result as a possible coroutine
    ids = cast(
        list[Any],
        deploy(
            *to_runner_deployments(planned, work_pool),
            work_pool_name=work_pool,
            build=False,
            push=False,
            print_next_steps_message=False,
            ignore_warnings=True,
        ),
    )
    return [
        CreatedDeployment(item.spec.full_name, str(dep_id), item.cron, item.parameters)
        for item, dep_id in zip(planned, ids, strict=True)
    ]


def serve_deployments(
    settings: Settings,
    data_dir: Path,
    crons: Mapping[str, str | None] | None = None,
    config_path: Path | None = None,
) -> None:  # pragma: no cover - blocks until stopped; the worker path is what the tests run
    """Serve every deployment from this process (no work pool or worker; blocks until stopped)."""
    planned = plan_deployments(settings, data_dir, crons, config_path)
    check_api(prefect_api_url())
    from prefect import serve

    serve(*to_runner_deployments(planned, work_pool=None))
