"""Infrastructure settings (URIs, names, aliases, secrets), read from ``LEADSCORE_*`` variables.

Modelling and handoff policy live in versioned YAML files instead (see ``pipelines/config.py``).
Settings are read once by the CLI and passed down as arguments; library code never reads them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Where leadscore keeps its state and which model it works with."""

    model_config = SettingsConfigDict(env_prefix="LEADSCORE_", extra="ignore")

    home: Path = Field(default=Path(".leadscore"), description="Project state: MLflow db, artifacts, stores.")
    mlflow_tracking_uri: str | None = Field(
        default=None,
        validation_alias=AliasChoices("LEADSCORE_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="Default: a SQLite database in the home directory.",
    )
    experiment_name: str = "leadscore"
    model_name: str = "leadscore"
    champion_alias: str = "champion"
    challenger_alias: str = "challenger"
    store_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of the score store (LEADSCORE_STORE_URL). Default: SQLite in the home directory.",
    )
    alert_webhook_url: str | None = Field(
        default=None,
        description="LEADSCORE_ALERT_WEBHOOK_URL: `leadscore monitor` POSTs a JSON alert here when a check fails.",
    )
    dask_address: str | None = Field(
        default=None,
        description="Dask cluster for flows and deployments (LEADSCORE_DASK_ADDRESS): tcp://host:8786 for an "
        "existing scheduler, local or local:N for a LocalCluster of N worker processes. Default: no Dask.",
    )

    batch_nice: int = Field(
        default=10,
        ge=0,
        le=19,
        description="LEADSCORE_BATCH_NICE: the CPU nice value (0-19) every command but `serve` and `deploy`, and "
        "every flow run, lowers itself to, so an endpoint on the same machine keeps its latency while they run "
        "(docs/operations.md). 0 leaves the priority as started.",
    )

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        return f"sqlite:///{self.home_dir / 'mlflow.db'}"

    @property
    def artifact_root(self) -> Path:
        return self.home_dir / "mlartifacts"

    @property
    def monitor_dir(self) -> Path:
        """Where ``leadscore monitor`` writes its JSON results (``latest.json`` and one file per check)."""
        return self.home_dir / "monitor"

    @property
    def score_store_url(self) -> str:
        """The score store: ``LEADSCORE_STORE_URL``, else ``leadscore.db`` in the home directory."""
        if self.store_url:
            return self.store_url
        from serving.stores import default_store_url

        return default_store_url(self.home_dir)

    @property
    def report_path(self) -> Path:
        """Where ``leadscore report`` writes the alignment report and ``GET /v1/report`` serves it from."""
        return self.home_dir / "report" / "report.html"


class SettingsError(ValueError):
    """A ``LEADSCORE_*`` variable holds a value the settings refuse; the message names each variable."""


def get_settings() -> Settings:
    """Read the settings from the environment (call once, at the edge).

    Raises:
        SettingsError: a variable's value is invalid (named, with its value, what is expected and the
            setting's description).
    """
    from pydantic import ValidationError

    try:
        return Settings()
    except ValidationError as exc:
        raise SettingsError(_settings_error_message(exc)) from None


def _settings_error_message(exc: Any) -> str:
    import os

    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        field = Settings.model_fields.get(name)
        # a field reported under an alias (e.g. MLFLOW_TRACKING_URI) has no LEADSCORE_ prefix
        variable = name.upper() if field is None else f"LEADSCORE_{name.upper()}"
        value = os.environ.get(variable, error.get("input"))
        what = f"{variable}={value!r}: {error['msg']}"
        if field is not None and field.description:
            what += f" ({field.description})"
        lines.append(what)
    return "invalid setting: " + "; ".join(lines) + ". Fix the variable or unset it for the default."
