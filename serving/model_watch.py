"""Champion hot swap: poll the registry alias, load a newly promoted version, swap it in atomically.

The service serves whatever :attr:`ChampionWatcher.current` points to. That attribute holds one
immutable :class:`LoadedChampion` (model, provenance and the service object built on it); replacing it
is a single reference assignment, so a request that has read it keeps a consistent model even while a
new one is swapped in, and no request ever sees a half-built one.

A background thread asks the registry every ``poll_seconds`` which version the alias points to (one
cheap registry call). When it differs from the served version, that *exact* version is loaded (the
registered pyfunc, once; the unwrapped scoring model is kept) and the service object is rebuilt on it
(``build``: e.g. checking the handoff policy's horizon against the model). Any failure on the way keeps
the old model serving; the failure is logged (once per version, then at debug level while it repeats)
and exposed as :attr:`ChampionWatcher.last_failure` for ``/ready``. The next poll retries, so a
transient registry or storage outage heals on its own.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, TypeVar

from models.package.bundle import LoadedModelInfo, load_scoring_model

log = logging.getLogger(__name__)

S = TypeVar("S")

ModelLoader = Callable[[str], tuple[Any, LoadedModelInfo]]
"""``loader(model_uri) -> (scoring_model, info)``; the default is :func:`models.package.bundle.load_scoring_model`."""
AliasResolver = Callable[[], int]
"""``resolver() -> version`` the alias points to now (raises when it cannot tell)."""


class PeriodicThread:
    """Runs ``task`` every ``interval`` seconds on a daemon thread until stopped; an exception is logged
    (``failure`` as the message, at ``level``, with its stack trace) and the next round tries again, so the
    thread never dies."""

    def __init__(
        self, name: str, interval: float, task: Callable[[], object], failure: str, level: int = logging.ERROR
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.name = name
        self.interval = float(interval)
        self._task = task
        self._failure = failure
        self._level = level
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the thread (idempotent)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self._task()
            except Exception:
                log.log(self._level, self._failure, exc_info=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the thread and wait for it (a round in progress finishes first)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None


@dataclass(frozen=True)
class LoadedChampion(Generic[S]):
    """One loaded model version and the service built on it (immutable: swapped as a whole)."""

    model: Any
    info: LoadedModelInfo
    service: S
    loaded_at: datetime

    @property
    def version(self) -> int | None:
        return self.info.version


@dataclass(frozen=True)
class LoadFailure:
    """The latest failed attempt to load the alias's version (cleared by the next successful load)."""

    version: int | None
    error: str
    at: datetime

    def describe(self, serving: int | None) -> str:
        what = f"version {self.version}" if self.version is not None else "the champion"
        still = f"; still serving version {serving}" if serving is not None else "; no model is loaded"
        return f"{what} failed to load at {self.at.isoformat(timespec='seconds')}: {self.error}{still}"


def registry_alias_resolver(name: str, alias: str, tracking_uri: str | None) -> AliasResolver:
    """Resolve ``name@alias`` to a version number with one registry call per poll."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def resolve() -> int:
        return int(client.get_model_version_by_alias(name, alias).version)

    return resolve


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    return f"{type(exc).__name__}: {first}"[:500]


class ChampionWatcher(Generic[S]):
    """Keeps the registry alias's current version loaded; see the module docstring.

    Args:
        name: registered model name.
        alias: the alias to follow (``champion``).
        build: ``build(scoring_model, info) -> service``; an exception counts as a failed load.
        tracking_uri: MLflow tracking/registry URI.
        poll_seconds: how often the background thread checks the alias (> 0).
        loader: loads ``models:/name/<version>``; injectable for tests.
        resolver: returns the alias's version; injectable for tests.
    """

    def __init__(
        self,
        name: str,
        alias: str,
        build: Callable[[Any, LoadedModelInfo], S],
        *,
        tracking_uri: str | None = None,
        poll_seconds: float = 30.0,
        loader: ModelLoader | None = None,
        resolver: AliasResolver | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        self.name = name
        self.alias = alias
        self.poll_seconds = float(poll_seconds)
        self._build = build
        self._loader: ModelLoader = loader or (lambda uri: load_scoring_model(uri, tracking_uri=tracking_uri))
        self._resolver = resolver or registry_alias_resolver(name, alias, tracking_uri)
        self._current: LoadedChampion[S] | None = None
        self._failure: LoadFailure | None = None
        self._lock = threading.Lock()  # one load at a time (poll thread vs. an explicit check)
        self._poller = PeriodicThread(
            f"champion-watch-{name}", self.poll_seconds, self.check_once, "champion poll failed unexpectedly"
        )

    @property
    def model_uri(self) -> str:
        return f"models:/{self.name}@{self.alias}"

    @property
    def current(self) -> LoadedChampion[S] | None:
        """The model being served (None until a first load succeeds)."""
        return self._current

    @property
    def last_failure(self) -> LoadFailure | None:
        """The latest failed load, unless a later load succeeded."""
        return self._failure

    def status(self) -> str | None:
        """A one-line degraded-state message for ``/ready`` (None when healthy)."""
        failure = self._failure
        if failure is None:
            return None
        current = self._current
        return failure.describe(current.version if current is not None else None)

    def check_once(self) -> bool:
        """Resolve the alias and load its version if it is not the one served; True when a swap happened."""
        with self._lock:
            try:
                version = self._resolver()
            except Exception as exc:
                self._fail(None, exc)
                return False
            current = self._current
            if current is not None and current.version == version:
                if self._failure is not None and self._failure.version not in (None, version):
                    # The alias moved back to the served version: the failed one no longer matters.
                    self._failure = None
                elif self._failure is not None and self._failure.version is None:
                    self._failure = None  # the registry answers again
                return False
            uri = f"models:/{self.name}/{version}"
            try:
                model, info = self._loader(uri)
                service = self._build(model, info)
            except Exception as exc:
                self._fail(version, exc)
                return False
            previous = current.version if current is not None else None
            self._current = LoadedChampion(model=model, info=info, service=service, loaded_at=datetime.now(UTC))
            self._failure = None
            if previous is None:
                log.info("loaded %s version %s (%s)", self.name, version, self.model_uri)
            else:
                log.info("champion of %s moved: now serving version %s (was %s)", self.name, version, previous)
            return True

    def _fail(self, version: int | None, exc: BaseException) -> None:
        repeated = self._failure is not None and self._failure.version == version
        self._failure = LoadFailure(version=version, error=_short(exc), at=datetime.now(UTC))
        serving = self._current.version if self._current is not None else None
        what = f"version {version} of {self.name}" if version is not None else f"the alias {self.model_uri}"
        if repeated:
            log.debug("loading %s failed again: %s", what, self._failure.error)
        else:
            # exc_info: the stack trace belongs in the logs (never in a response).
            log.error("loading %s failed; still serving version %s", what, serving, exc_info=exc)

    # -- background polling ----------------------------------------------------------------------
    def start(self) -> None:
        """Start the polling thread (idempotent)."""
        self._poller.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the polling thread and wait for it (a load in progress finishes first)."""
        self._poller.stop(timeout)
