"""Connecting to (or starting) the Dask cluster behind ``--cluster`` / ``LEADSCORE_DASK_ADDRESS``.

Imported only when a cluster is asked for: nothing here runs, and Dask is not imported, otherwise.

- ``tcp://host:port`` (or ``tls://...``): connect to an existing scheduler (``dask scheduler``); it is left
  running on exit, only the client is closed.
- ``local`` / ``local:N``: start a ``LocalCluster`` of N worker processes (default 2), one thread each,
  bound to loopback, no dashboard; closed on exit, and on SIGTERM (turned into ``SystemExit`` so the
  ``with`` block unwinds and the worker processes end with their parent).
"""

from __future__ import annotations

import re
import signal
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

_LOCAL = re.compile(r"^local(?::(?P<n>\d+))?$")
_REMOTE = re.compile(r"^(tcp|tls|ucx|inproc)://\S+$")
DEFAULT_LOCAL_WORKERS = 2


@dataclass(frozen=True)
class ClusterSpec:
    """A parsed ``--cluster`` value: an existing scheduler's address, or a local cluster's size."""

    address: str | None
    local_workers: int | None


def parse_cluster(value: str) -> ClusterSpec:
    """Parse ``tcp://host:port`` or ``local[:N]``.

    Raises:
        ValueError: anything else (with the accepted forms).
    """
    text = value.strip()
    if match := _LOCAL.match(text):
        n = int(match["n"]) if match["n"] else DEFAULT_LOCAL_WORKERS
        if n < 1:
            raise ValueError(f"--cluster {value!r}: a local cluster needs at least one worker")
        return ClusterSpec(address=None, local_workers=n)
    if _REMOTE.match(text):
        return ClusterSpec(address=text, local_workers=None)
    raise ValueError(
        f"--cluster {value!r} is not understood: expected tcp://HOST:PORT (an existing Dask scheduler) or "
        "local[:N] (a local cluster of N worker processes)"
    )


@contextmanager
def _sigterm_exits() -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def open_cluster(value: str, *, memory_limit: str | None = "auto") -> Iterator[Any]:
    """A ``distributed.Client`` for ``value`` (see :func:`parse_cluster`); everything started is closed after."""
    spec = parse_cluster(value)
    from distributed import Client, LocalCluster

    with _sigterm_exits():
        if spec.address is not None:
            client = Client(spec.address, timeout="30s")
            try:
                yield client
            finally:
                client.close()
            return
        cluster = LocalCluster(
            n_workers=spec.local_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=None,
            memory_limit=memory_limit,
        )
        try:
            client = Client(cluster)
            try:
                yield client
            finally:
                client.close()
        finally:
            cluster.close()


def dask_task_runner(value: str) -> Any:
    """prefect-dask's ``DaskTaskRunner`` for a flow or deployment (``flow.with_options(task_runner=...)``).

    ``tcp://...`` connects to the scheduler; ``local[:N]`` makes the runner start (and close) a loopback
    ``LocalCluster`` of N worker processes for the flow run.
    """
    spec = parse_cluster(value)
    from prefect_dask import DaskTaskRunner

    if spec.address is not None:
        return DaskTaskRunner(address=spec.address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={
            "n_workers": spec.local_workers,
            "threads_per_worker": 1,
            "processes": True,
            "host": "127.0.0.1",
            "dashboard_address": None,
        },
    )


def _identity(value: Any) -> Any:
    return value


class DaskPartitionRunner:
    """A :class:`serving.partitioned_batch.PartitionRunner` on a ``distributed.Client``.

    Tasks are ``pure=False`` (a retry recomputes) with ``retries`` after an exception; a result lost with
    its worker is recomputed by the scheduler from the task graph (a partition's scoring task only reads
    files).
    """

    def __init__(self, client: Any, *, retries: int = 2) -> None:
        self.client = client
        self.retries = retries

    def share(self, value: Any) -> Any:
        # A task, not ``scatter``: scattered data has no lineage, so a value whose workers all died (one
        # killed, the other restarted empty) could not be recomputed and every task needing it would be
        # cancelled. The value travels once in the graph; workers fetch it from each other after that.
        return self.client.submit(_identity, value, key=f"leadscore-share-{uuid.uuid4().hex[:8]}", pure=False)

    def submit(self, fn: Any, *args: Any, key: str) -> Any:
        return self.client.submit(fn, *args, key=f"{key}-{uuid.uuid4().hex[:8]}", retries=self.retries, pure=False)

    def gather(self, handles: Any) -> list[Any]:
        # As each task ends, not all at the end: a worker then holds only the results not fetched yet.
        from distributed import as_completed

        handles = list(handles)
        position = {handle.key: i for i, handle in enumerate(handles)}
        values: list[Any] = [None] * len(handles)
        for future, value in as_completed(handles, with_results=True):
            values[position[future.key]] = value
            future.release()
        return values

    def release(self, handles: Any) -> None:
        for handle in handles:
            handle.release()
