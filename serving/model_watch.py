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

Until a first model is loaded (the tracking server unreachable at start, no champion yet) the thread
retries every ``retry_seconds`` (at most ``poll_seconds``), also when following the alias is off
(``follow=False``): a service started before its registry becomes ready once the registry answers.
:meth:`ChampionWatcher.start` makes the first attempt on the thread, so a registry that hangs (MLflow's
HTTP client retries for minutes) never holds up the start; :meth:`ChampionWatcher.wait_first_attempt` lets
the caller wait a bounded time for it.
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

CHECK_OVERDUE_SECONDS = 30.0
"""A registry check running longer than this is reported by ``/ready`` while the loaded model keeps serving."""

ModelLoader = Callable[[str], tuple[Any, LoadedModelInfo]]
"""``loader(model_uri) -> (scoring_model, info)``; the default is :func:`models.package.bundle.load_scoring_model`."""
AliasResolver = Callable[[], int]
"""``resolver() -> version`` the alias points to now (raises when it cannot tell)."""


class PeriodicThread:
    """Runs ``task`` every ``interval`` seconds on a daemon thread until stopped; an exception is logged
    (``failure`` as the message, at ``level``, with its stack trace) and the next round tries again, so the
    thread never dies. ``next_interval`` (optional) is asked for the wait before each round instead;
    ``immediately`` runs the first round at once instead of after the first wait."""

    def __init__(
        self,
        name: str,
        interval: float,
        task: Callable[[], object],
        failure: str,
        level: int = logging.ERROR,
        *,
        next_interval: Callable[[], float] | None = None,
        immediately: bool = False,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, got {interval}")
        self.name = name
        self.interval = float(interval)
        self._task = task
        self._failure = failure
        self._level = level
        self._next_interval = next_interval or (lambda: self.interval)
        self._immediately = immediately
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
        wait = 0.0 if self._immediately else self._next_interval()
        while not self._stop.wait(wait):
            try:
                self._task()
            except Exception:
                log.log(self._level, self._failure, exc_info=True)
            wait = self._next_interval()

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

    def describe(self, serving: int | None, model_uri: str = "the champion") -> str:
        at = self.at.isoformat(timespec="seconds")
        still = f"; still serving version {serving}" if serving is not None else "; no model is loaded"
        if self.version is None:  # the registry did not say which version the alias points to
            return f"{model_uri} could not be resolved in the registry at {at}: {self.error}{still}"
        return f"version {self.version} failed to load at {at}: {self.error}{still}"


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
        retry_seconds: how often it retries while no model is loaded yet (at most ``poll_seconds``).
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
        retry_seconds: float = 5.0,
        loader: ModelLoader | None = None,
        resolver: AliasResolver | None = None,
    ) -> None:
        if poll_seconds <= 0:
            raise ValueError(f"poll_seconds must be > 0, got {poll_seconds}")
        if retry_seconds <= 0:
            raise ValueError(f"retry_seconds must be > 0, got {retry_seconds}")
        self.name = name
        self.alias = alias
        self.poll_seconds = float(poll_seconds)
        self.retry_seconds = min(float(retry_seconds), self.poll_seconds)
        self.follow = True
        self._build = build
        self._loader: ModelLoader = loader or (lambda uri: load_scoring_model(uri, tracking_uri=tracking_uri))
        self._resolver = resolver or registry_alias_resolver(name, alias, tracking_uri)
        self._current: LoadedChampion[S] | None = None
        self._failure: LoadFailure | None = None
        self._lock = threading.Lock()  # one load at a time (poll thread vs. an explicit check)
        self._attempted = threading.Event()  # set when the first check has finished (loaded or failed)
        self._checking_since: datetime | None = None
        self._poller = PeriodicThread(
            f"champion-watch-{name}",
            self.poll_seconds,
            self._poll,
            "champion poll failed unexpectedly",
            next_interval=lambda: self.poll_seconds if self._current is not None else self.retry_seconds,
            immediately=True,
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
        failure, current, since = self._failure, self._current, self._checking_since
        if since is not None:
            at = since.isoformat(timespec="seconds")
            if current is None and failure is None:
                return f"loading {self.model_uri} (first attempt in progress since {at}); no model is loaded yet"
            if current is not None and (datetime.now(UTC) - since).total_seconds() >= CHECK_OVERDUE_SECONDS:
                return (
                    f"checking {self.model_uri} has not finished since {at} (registry unreachable?); "
                    f"still serving version {current.version}"
                )
        if failure is None:
            return None
        return failure.describe(current.version if current is not None else None, self.model_uri)

    def _poll(self) -> None:
        if self.follow or self._current is None:
            self.check_once()

    def check_once(self) -> bool:
        """Resolve the alias and load its version if it is not the one served; True when a swap happened."""
        try:
            with self._lock:
                self._checking_since = datetime.now(UTC)
                try:
                    return self._check()
                finally:
                    self._checking_since = None
        finally:
            self._attempted.set()

    def wait_first_attempt(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the first check to finish; True when it did (loaded or failed)."""
        return self._attempted.wait(timeout)

    def _check(self) -> bool:
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
    def start(self, *, follow: bool = True) -> None:
        """Start the polling thread (idempotent); its first check runs at once.

        ``follow=False``: only retry until a first model is loaded, then never check the alias again.
        """
        self.follow = follow
        self._poller.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the polling thread and wait for it (a load in progress finishes first)."""
        self._poller.stop(timeout)
