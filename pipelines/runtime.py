"""Process-level defaults applied by the CLI before Prefect is imported.

Kept out of module import time on purpose: importing leadscore never changes the environment.
"""

from __future__ import annotations

import os

# Prefect must never phone home (runs offline in CI) and should run locally without a server.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLI_PROMPT": "false",
    # The CLI prints its own summary and clear errors; Prefect's run logs stay in its API (UI).
    "PREFECT_LOGGING_LEVEL": "CRITICAL",
    "DO_NOT_TRACK": "true",
    # The first run on a new machine creates Prefect's database (migrations): measured 12 s on a quiet
    # machine, and over Prefect's 20 s default on a busy one ("Timed out while attempting to connect to
    # ephemeral Prefect API server").
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
# LightGBM's OpenMP threads spin while waiting; on a shared 2-core machine that wastes the CPU the
# other thread needs (measured: 14 s vs 268 s for the same training under load).
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
MLFLOW_DEFAULTS = {
    # No telemetry or network look-ups from MLflow either.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
}


def apply_runtime_defaults() -> None:
    """Set offline-friendly defaults for Prefect and MLflow unless the user set them."""
    for key, value in {**PREFECT_DEFAULTS, **OPENMP_DEFAULTS, **MLFLOW_DEFAULTS}.items():
        os.environ.setdefault(key, value)
