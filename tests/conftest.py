"""Session-wide test setup: offline Prefect and MLflow, one Prefect harness per session."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Before anything imports Prefect or MLflow: no telemetry, no network, a throwaway Prefect home.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="leadscore-tests-"))
atexit.register(shutil.rmtree, _SESSION_HOME, ignore_errors=True)
os.environ.setdefault("PREFECT_HOME", str(_SESSION_HOME / "prefect"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ["DO_NOT_TRACK"] = "true"
os.environ["MLFLOW_DISABLE_TELEMETRY"] = "true"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "CRITICAL")
os.environ.setdefault("MPLBACKEND", "Agg")
# Commands and flows run in-process would lower the test workers' CPU priority for good (a nice value is
# not raised back); tests/pipelines/test_cpu_priority.py checks LEADSCORE_BATCH_NICE in child processes.
os.environ["LEADSCORE_BATCH_NICE"] = "0"


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API for the whole session (starting one costs ~12 s)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def session_home() -> Path:
    return _SESSION_HOME
