"""What the flow modules share: the retry policy of I/O tasks and the feature build's summary.

No ``from __future__ import annotations`` (see :mod:`pipelines.flows`).
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect.cache_policies import NO_CACHE

from features.validation import ValidationReport


def _retry_on_os_error(task: Any, task_run: Any, state: Any) -> bool:
    try:
        state.result(raise_on_failure=True)
    except OSError:
        return True
    except Exception:
        return False
    return False


IO_TASK: dict[str, Any] = {
    "retries": 2,
    "retry_delay_seconds": 1,
    "retry_condition_fn": _retry_on_os_error,
    "cache_policy": NO_CACHE,
}


def lower_batch_priority() -> None:
    """A flow run's first step: lower this process' CPU priority to ``LEADSCORE_BATCH_NICE``.

    The ``leadscore`` commands do it before anything else; this covers flow runs started by a Prefect
    worker or ``deploy --serve``, which do not go through the command line.
    """
    from prefect import get_run_logger

    from pipelines.runtime import lower_cpu_priority
    from pipelines.settings import get_settings

    priority = lower_cpu_priority(get_settings().batch_nice)
    group = (
        "not lowered (not a session leader, or no autogroups)"
        if priority.autogroup_nice is None
        else priority.autogroup_nice
    )
    get_run_logger().info("CPU priority: nice %s, scheduler autogroup %s", priority.nice, group)


@dataclass
class BuildFeaturesSummary:
    """What ``build-features`` did, for the CLI and for callers."""

    out: Path
    rows: int
    snapshots: int
    first_as_of: str | None
    last_as_of: str | None
    n_features: int
    positives: int
    quarantine_dir: Path
    quarantine_files: dict[str, Path] = field(default_factory=dict)
    validation: ValidationReport | None = None
