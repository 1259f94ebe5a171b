"""Infrastructure settings (URIs, names, aliases, secrets), read from ``LEADSCORE_*`` variables.

Modelling and handoff policy live in versioned YAML files instead (see ``pipelines/config.py``).
Settings are read once by the CLI and passed down as arguments; library code never reads them.
"""

from __future__ import annotations

from pathlib import Path

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


def get_settings() -> Settings:
    """Read the settings from the environment (call once, at the edge)."""
    return Settings()
