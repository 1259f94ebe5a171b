"""Running the partitioned feature build on a Dask cluster (the optional ``dask`` extra).

Only :mod:`features.partitioned` decides *what* runs per partition; this module only hands those calls
to a ``distributed.Client``. It imports nothing from Dask at import time, and is itself imported only when
a cluster is asked for (``--cluster``), so the single-machine path never loads Dask.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distributed import Client

#: Times a partition's task is run again after it raised (a lost worker is rescheduled by the scheduler
#: on its own, up to ``distributed.scheduler.allowed-failures`` times, without counting here).
DEFAULT_RETRIES = 2


def dask_mapper(
    client: Client, *, retries: int = DEFAULT_RETRIES, prefix: str = "leadscore"
) -> Callable[..., list[Any]]:
    """A ``mapper`` for :func:`features.partitioned.build_partitioned_features` that runs on ``client``.

    Each item becomes one task (``pure=False``: a retry recomputes it); results come back in input order.
    A task on a worker that dies is rescheduled on another worker; since every partition task writes its
    output atomically and deterministically, a re-run gives the same file.
    """

    def run(fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if not items:
            return []
        name = getattr(fn, "__name__", type(fn).__name__).strip("_").lower()
        keys = [f"{prefix}-{name}-{i}" for i in range(len(items))]
        futures = [
            client.submit(fn, item, key=key, retries=retries, pure=False) for key, item in zip(keys, items, strict=True)
        ]
        try:
            return list(client.gather(futures))
        finally:
            for future in futures:
                future.release()

    return run
