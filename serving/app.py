"""The CRM endpoint: a FastAPI app serving the champion model, the batch scores and the handoff queue.

Routes (see ``docs/crm-integration.md`` for curl examples):

- ``POST /v1/score``: score leads by ``lead_id`` (looked up in the prospect history the service was
  started with) or inline (attributes + activities + stage history), with reasons on request.
- ``GET /v1/leads/{lead_id}/score``: the lead's latest batch score.
- ``GET /v1/handoff``: the current handoff queue, best first (``limit``/``offset``).
- ``POST /v1/feedback``: sales' verdict on a handoff; idempotent per (lead, handoff): 201 when stored,
  200 when the same feedback was already stored, 409 when different feedback was, 404 for an unknown
  handoff.
- ``GET /v1/model``: the model being served and the policy version.
- ``GET /v1/report``: the latest alignment report (HTML written by ``leadscore report``); 404 before the first.
- ``GET /ready``: a model is loaded (503 otherwise); reports a failed reload while the old model serves.
- ``GET /health``: liveness, the only route without authentication.

Design notes:

- The registered pyfunc is loaded ONCE per version (in the lifespan, then by the champion watcher on a
  promotion) and the unwrapped scoring model is called directly: no MLflow signature enforcement or
  pyfunc wrapper per request. A promotion swaps one immutable object (:mod:`serving.model_watch`).
- Endpoints are plain ``def``: the work (SQL, numpy) is synchronous and runs in the thread pool.
- Every error is an :class:`~serving.schemas.ErrorResponse` with a request id (also sent as the
  ``X-Request-ID`` header); an unexpected exception is logged with its stack trace and answered with a
  bare 500 body. Bodies over ``max_body_bytes`` are refused with 413, whether they announce their size
  (``Content-Length``) or stream it.
"""

from __future__ import annotations

import gc
import logging
import re
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Protocol

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serving.auth import ApiKeyAuth, ApiKeyring, KeysFileReloader
from serving.itemized import score_items
from serving.limits import DEFAULT_DEADLINE_SECONDS, DEFAULT_MAX_IN_FLIGHT, LoadShedder, RateLimiter
from serving.model_watch import ChampionWatcher, LoadedChampion, PeriodicThread
from serving.openapi_contract import install_contract_openapi
from serving.schemas import (
    API_VERSION,
    DEFAULT_QUEUE_LIMIT,
    MAX_QUEUE_LIMIT,
    MAX_QUEUE_OFFSET,
    ErrorBody,
    ErrorCode,
    ErrorResponse,
    FeedbackRequest,
    FeedbackResponse,
    FieldError,
    HandoffQueuePage,
    HealthResponse,
    LeadId,
    ModelInfo,
    ModelRef,
    Prediction,
    ReadyResponse,
    ScoreRequest,
    ScoreResponse,
    error_response,
    predictions_json,
    validation_error_response,
)
from serving.schemas.results import ScoreResultsResponse, results_json
from serving.stores import FeedbackConflictError, ScoreStore, UnknownHandoffError

if TYPE_CHECKING:
    from features.history import ProspectHistory
    from models.package.bundle import LoadedModelInfo
    from serving.lead_states import EachScored
    from serving.policy import HandoffPolicy

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 1_048_576
"""1 MiB: 100 inline leads with a few hundred activities each fit comfortably."""
DEFAULT_POLL_SECONDS = 30.0
DEFAULT_RETRY_SECONDS = 5.0
DEFAULT_STARTUP_LOAD_SECONDS = 120.0
REQUEST_ID_HEADER = "X-Request-ID"
INLINE_SCORING_MAX_LEADS = 10
"""``POST /v1/score`` requests of up to this many leads by id at the default as_of (feature snapshot built)
are scored on the event loop (well under a millisecond a lead); anything else runs in the thread pool."""
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


# -- the scoring service the app drives ----------------------------------------------------------
class ScoredBatch(Protocol):
    def to_records(self) -> list[dict[str, Any]]: ...


class Scorer(Protocol):
    """What the app needs from the scoring service built on one model version (:class:`serving.service.ScoringService`).

    ``score_leads`` scores leads of the configured prospect history by id (``as_of=None``: the service's
    default, now capped at the end of the data); ``score_history`` scores leads of an explicit history (the
    inline leads of a request). Both answer in the order of ``lead_ids`` and raise
    :class:`serving.service.UnknownLeadError` / :class:`serving.service.LeadNotOpenError`. ``ready_for``
    says whether ``score_leads`` of those leads at that ``as_of`` is cheap enough to run on the event loop (no
    feature build, no store query); ``refresh_store_facts`` checks the score store for a new batch (called
    from a background thread).
    """

    def ready_for(self, lead_ids: Sequence[str], as_of: datetime | None = None) -> bool: ...

    def refresh_store_facts(self) -> None: ...

    def score_leads(
        self, lead_ids: Sequence[str], as_of: datetime | None = None, *, explain: bool = True
    ) -> ScoredBatch: ...

    def score_history(
        self,
        history: ProspectHistory,
        lead_ids: Sequence[str] | None = None,
        as_of: datetime | None = None,
        *,
        explain: bool = True,
        as_records: bool = False,
    ) -> Sequence[Any]: ...

    def score_each(
        self, lead_ids: Sequence[str], as_of: datetime | None = None, *, explain: bool = True
    ) -> EachScored: ...


ScorerFactory = Callable[[Any, "LoadedModelInfo"], Scorer]
"""``factory(scoring_model, info) -> Scorer``: called for every model version loaded (an exception = failed load)."""


@dataclass
class ServiceConfig:
    """Everything :func:`create_app` needs (settings-like; the CLI builds it from flags and env).

    Args:
        tracking_uri: MLflow tracking/registry URI.
        model_name: registered model name.
        alias: the alias to serve and follow (``champion``).
        policy: the handoff policy (its version is reported with every score).
        store_url: SQLAlchemy URL of the score store (batch scores, handoffs, feedback; trends and cool-downs).
        api_keys: the accepted API keys (at least one).
        data_dir: data directory whose prospect history ``lead_id`` requests are looked up in, and whose data
            contract inline leads are checked against (optional: without it, and without ``history``,
            ``POST /v1/score`` is refused and only batch scores, the queue and feedback are served).
        poll_seconds: how often to check the alias for a newly promoted version (0 = never).
        retry_seconds: how often to retry while no model is loaded (registry unreachable at start, no
            champion yet), whatever ``poll_seconds`` is; ``/ready`` is 503 until a load succeeds.
        startup_load_seconds: how long the start waits for the first load attempt; past it the service
            starts answering (``/ready`` 503, "first attempt in progress") while the attempt goes on.
        max_body_bytes: larger request bodies are refused with 413.
        scorer_factory: builds the scoring service for a loaded model (default: :func:`default_scorer_factory`).
        history: an already validated history to serve instead of reading ``data_dir`` (tests, embedding).
        store_check_seconds: how often on-demand scoring checks the store for a new batch (0 = every request,
            exact; > 0 saves a query per request, e.g. on a remote PostgreSQL, at the cost of trends and
            cool-downs lagging a new batch by up to that long; see ``serving.service``, "Store facts").
        report_path: the alignment report ``GET /v1/report`` serves (written by ``leadscore report``); None = no
            report route content (404).
        deadline_seconds / max_in_flight: a request not answered within the deadline, or past that many in
            progress, gets 503 + Retry-After at once (``serving.limits.LoadShedder``).
        rate_limit_per_second / rate_limit_burst: per API key, 429 + Retry-After past it (None = off).
        cors_origins: browser origins allowed to call the API (empty = no CORS headers at all, the default).
    """

    tracking_uri: str | None
    model_name: str
    policy: HandoffPolicy
    store_url: str
    api_keys: ApiKeyring
    alias: str = "champion"
    data_dir: Path | None = None
    poll_seconds: float = DEFAULT_POLL_SECONDS
    retry_seconds: float = DEFAULT_RETRY_SECONDS
    startup_load_seconds: float = DEFAULT_STARTUP_LOAD_SECONDS
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    scorer_factory: ScorerFactory | None = None
    history: ProspectHistory | None = field(default=None, repr=False)
    store_check_seconds: float = 0.0
    report_path: Path | None = None
    # load shedding and rate limits (serving/limits.py); CORS stays off unless origins are listed
    deadline_seconds: float = DEFAULT_DEADLINE_SECONDS
    max_in_flight: int = DEFAULT_MAX_IN_FLIGHT
    rate_limit_per_second: float | None = None
    rate_limit_burst: int | None = None
    cors_origins: tuple[str, ...] = ()
    api_keys_reloader: KeysFileReloader | None = None  # re-reads a changed keys file (revocation, no restart)


def default_scorer_factory(
    policy: HandoffPolicy,
    store: ScoreStore | None,
    history: ProspectHistory | None,
    *,
    store_check_seconds: float = 0.0,
) -> ScorerFactory:
    """Build a :class:`serving.service.ScoringService` for each loaded model version.

    The service's feature snapshot, lead index and store facts of the configured history are built here
    (:meth:`serving.service.ScoringService.warm`), on the loading thread, so no request after a (hot) load
    pays for them.
    """

    def build(model: Any, info: LoadedModelInfo) -> Scorer:
        from serving.service import ScoringService

        service = ScoringService(model, info, policy, store, history=history, store_check_seconds=store_check_seconds)
        # snapshot, lead index and store facts, before the model serves: no request after a (hot) load pays
        # for them, and none waits on the lock that builds the lead index (measured: benchmarks/bench_contention.py)
        service.warm()
        return service

    return build


# -- errors ----------------------------------------------------------------------------------------
class ApiError(Exception):
    """An expected error answered with an :class:`ErrorResponse` (no stack trace, no logging at error level)."""

    def __init__(
        self, status: int, code: ErrorCode, message: str, fields: Sequence[FieldError] = (), headers: Any = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.fields = list(fields)
        self.headers = headers


class PayloadTooLargeError(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(status_code=413, detail=f"the request body exceeds {limit} bytes")


_STATUS_CODES: dict[int, ErrorCode] = {
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    409: "conflict",
    413: "payload_too_large",
    422: "validation_error",
    503: "not_ready",
}


def _request_id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def _error(status: int, body: ErrorResponse, headers: Any = None) -> JSONResponse:
    return JSONResponse(body.model_dump(mode="json"), status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        body = ErrorResponse(
            error=ErrorBody(code=exc.code, message=exc.message, fields=exc.fields, request_id=_request_id(request))
        )
        return _error(exc.status, body, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _STATUS_CODES.get(exc.status_code)
        if code is None:  # e.g. 405: not an error code of the API's own, report it as invalid usage
            code = "not_found" if exc.status_code in (404, 405) else "validation_error"
        message = exc.detail if isinstance(exc.detail, str) else "request refused"
        return _error(exc.status_code, error_response(code, message, _request_id(request)), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(422, validation_error_response(exc.errors(), _request_id(request)))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = _request_id(request)
        log.error("request %s %s failed (request id %s)", request.method, request.url.path, request_id, exc_info=exc)
        return _error(500, error_response("internal_error", "internal error; quote the request id", request_id))


# -- request guard (pure ASGI: no per-request task overhead) ----------------------------------------
class RequestGuard:
    """Gives every request an id (``X-Request-ID``, echoed) and refuses bodies over ``max_body_bytes``."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        length: str | None = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
            elif name == b"content-length":
                length = value.decode("latin-1")
        request_id = incoming if incoming and _REQUEST_ID.match(incoming) else uuid.uuid4().hex[:16]
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), header]
            await send(message)

        limit = self.max_body_bytes
        if length is not None and (not length.isdigit() or int(length) > limit):
            status = 413 if length.isdigit() else 400
            code: ErrorCode = "payload_too_large" if status == 413 else "validation_error"
            text = f"the request body exceeds {limit} bytes" if status == 413 else "invalid Content-Length header"
            response = _error(status, error_response(code, text, request_id), {"Connection": "close"})
            await response(scope, receive, send_with_id)
            return

        received = 0

        async def receive_limited() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLargeError(limit)
            return message

        await self.app(scope, receive_limited, send_with_id)


# -- store facts refresher -------------------------------------------------------------------------
def _store_facts_refresher(watcher: ChampionWatcher[Scorer], store_check_seconds: float) -> PeriodicThread | None:
    """A thread checking the score store for a new batch twice per ``store_check_seconds`` (None for 0).

    On-demand scoring caches trend and cool-down facts and re-reads the store's state token when its last
    check is older than ``store_check_seconds`` (see :mod:`serving.service`, "Store facts"). Done here, the
    check never falls on a request: cached requests stay on the event loop, with no query in their way.
    Follows the champion watcher, so a hot-swapped model's service is refreshed too. A failed check is
    logged; requests then check the store themselves until the next round succeeds.
    """
    if store_check_seconds <= 0:
        return None  # every request checks the store itself

    def refresh() -> None:
        current = watcher.current
        if current is not None:
            current.service.refresh_store_facts()

    return PeriodicThread(
        "store-facts-refresher",
        store_check_seconds / 2.0,
        refresh,
        "checking the score store for a new batch failed",
        level=logging.WARNING,
    )


# -- the app ---------------------------------------------------------------------------------------
@dataclass
class AppState:
    """What the routes use; kept on ``app.state.leadscore``."""

    config: ServiceConfig
    store: ScoreStore
    watcher: ChampionWatcher[Scorer]
    history: ProspectHistory | None
    known: frozenset[str]
    started_at: datetime


def _state(request: Request) -> AppState:
    state: AppState = request.app.state.leadscore
    return state


def _champion(state: AppState) -> LoadedChampion[Scorer]:
    current = state.watcher.current
    if current is None:
        detail = state.watcher.status() or "the model is not loaded yet"
        raise ApiError(503, "not_ready", f"no model is loaded: {detail}", headers={"Retry-After": "5"})
    return current


def _load_history(config: ServiceConfig) -> ProspectHistory | None:
    if config.history is not None:
        return config.history
    if config.data_dir is None:
        return None
    from features.validation import load_history

    result = load_history(config.data_dir)
    quarantined = result.report.rows_quarantined
    if quarantined:
        log.warning(
            "%s: %d rows failed validation and are not served (run leadscore validate --data %s for the reasons)",
            config.data_dir,
            quarantined,
            config.data_dir,
        )
    config.policy.check_against_contract(result.history.contract, source="handoff policy")
    log.info("serving the prospect history of %s: %d leads", config.data_dir, len(result.history.leads))
    return result.history


def create_app(config: ServiceConfig) -> FastAPI:
    """The CRM endpoint app; the model is loaded and the champion watcher started in the lifespan."""
    if config.max_body_bytes < 1:
        raise ValueError(f"max_body_bytes must be >= 1, got {config.max_body_bytes}")
    if config.poll_seconds < 0:
        raise ValueError(f"poll_seconds must be >= 0 (0 = never), got {config.poll_seconds}")
    if not config.retry_seconds > 0 or config.startup_load_seconds < 0:
        raise ValueError(
            f"retry_seconds must be > 0 and startup_load_seconds >= 0, got {config.retry_seconds} "
            f"and {config.startup_load_seconds}"
        )
    if config.store_check_seconds < 0:
        raise ValueError(f"store_check_seconds must be >= 0 (0 = every request), got {config.store_check_seconds}")
    # refuses an empty keyring: the API is never open by accident
    auth = ApiKeyAuth(config.api_keys, reloader=config.api_keys_reloader)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        store = ScoreStore(config.store_url)
        history = _load_history(config)
        known = frozenset(history.leads["lead_id"].astype(str).tolist()) if history is not None else frozenset()
        factory = config.scorer_factory or default_scorer_factory(
            config.policy, store, history, store_check_seconds=config.store_check_seconds
        )
        watcher: ChampionWatcher[Scorer] = ChampionWatcher(
            config.model_name,
            config.alias,
            factory,
            tracking_uri=config.tracking_uri,
            poll_seconds=config.poll_seconds or DEFAULT_POLL_SECONDS,
            retry_seconds=config.retry_seconds,
        )
        # The first load runs on the watcher's thread; the start waits for it a bounded time. A failed or
        # hanging first load (tracking server unreachable) does not stop the process: /ready is 503 and
        # says why, and the watcher retries every retry_seconds until a model loads (also with
        # poll_seconds 0, which only turns off following the alias afterwards).
        watcher.start(follow=config.poll_seconds > 0)
        if not watcher.wait_first_attempt(config.startup_load_seconds):
            log.warning(
                "the first load of %s has not finished after %g s; serving /ready 503 until it does",
                watcher.model_uri,
                config.startup_load_seconds,
            )
        # Everything loaded so far (libraries, the history, the model and its feature snapshot) lives as
        # long as the process: freeze it out of the garbage collector's reach. Measured with the default
        # model on 20,000 leads: every full collection otherwise traverses ~340,000 objects for ~200 ms,
        # stalling all requests in flight (the p99 spikes of benchmarks/bench_endpoint.py).
        gc.collect()
        gc.freeze()
        refresher = _store_facts_refresher(watcher, config.store_check_seconds)
        if refresher is not None:
            refresher.start()
        app.state.leadscore = AppState(config, store, watcher, history, known, datetime.now(UTC))
        try:
            yield
        finally:
            if refresher is not None:
                refresher.stop()
            watcher.stop()
            store.close()
            gc.unfreeze()

    app = FastAPI(
        title="leadscore CRM API",
        version=API_VERSION,
        summary="Lead readiness, buying stage, reasons and the sales handoff queue.",
        description="Authenticate with `Authorization: Bearer <API key>`. Errors always have the `ErrorResponse` "
        "shape and carry a request id (also in the `X-Request-ID` response header).",
        lifespan=lifespan,
        responses={
            400: {
                "model": ErrorResponse,
                "description": "Malformed request: a body that is not JSON, or a bad header.",
            },
            401: {"model": ErrorResponse, "description": "Missing or malformed bearer token."},
            403: {"model": ErrorResponse, "description": "Unknown API key."},
            413: {"model": ErrorResponse, "description": "Request body too large."},
            422: {"model": ErrorResponse, "description": "Invalid input; `fields` names each invalid field."},
            500: {"model": ErrorResponse, "description": "Internal error (no details; quote the request id)."},
            503: {
                "model": ErrorResponse,
                "description": "Overloaded (too many requests in progress, or the deadline passed) or no model "
                "loaded; retry after `Retry-After` seconds.",
            },
        },
    )
    app.add_middleware(LoadShedder, max_in_flight=config.max_in_flight, deadline_seconds=config.deadline_seconds)
    if config.rate_limit_per_second is not None:
        app.add_middleware(RateLimiter, rate=config.rate_limit_per_second, burst=config.rate_limit_burst)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        # Browsers send the API key in Authorization: the preflight must allow that header (and Content-Type for
        # JSON bodies, X-Request-ID to correlate); scripts may read the request id and Retry-After of a 429/503.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER, "Retry-After"],
        )
    app.add_middleware(RequestGuard, max_body_bytes=config.max_body_bytes)  # outermost: ids on every answer
    _install_error_handlers(app)
    install_contract_openapi(
        app,
        lambda: (state.history, state.store) if (state := getattr(app.state, "leadscore", None)) is not None else None,
    )
    secured = [Depends(auth)]

    @app.get("/health", response_model=HealthResponse, tags=["operations"])
    def health() -> HealthResponse:
        """Liveness: the process answers (no authentication, no model needed)."""
        return HealthResponse()

    @app.get(
        "/ready",
        response_model=ReadyResponse,
        tags=["operations"],
        dependencies=secured,
        responses={503: {"model": ReadyResponse, "description": "No model is loaded."}},
    )
    def ready(request: Request, response: Response) -> ReadyResponse:
        """Readiness: a model is loaded. `detail` reports a failed reload while the old model keeps serving."""
        state = _state(request)
        current = state.watcher.current
        detail = state.watcher.status()
        if current is None:
            response.status_code = 503
            return ReadyResponse(ready=False, detail=detail or "the model is not loaded yet")
        return ReadyResponse(
            ready=True,
            model=_model_ref(current),
            policy_version=state.config.policy.policy_version,
            detail=detail,
        )

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"], dependencies=secured)
    def model_info(request: Request) -> ModelInfo:
        """The model being served: name, version, training time, test metrics, horizon and policy version."""
        state = _state(request)
        current = _champion(state)
        info = current.info
        return ModelInfo(
            name=info.name or state.config.model_name,
            version=str(info.version) if info.version is not None else "unregistered",
            alias=state.config.alias,
            run_id=info.run_id,
            trained_at=_parse_time(info.trained_at),
            metrics={k: float(v) for k, v in info.metrics.items() if np.isfinite(v)},
            horizon_days=int(getattr(current.model, "horizon_days", 0)) or None,
            policy_version=state.config.policy.policy_version,
            loaded_at=current.loaded_at,
        )

    @app.post("/v1/score", response_model=ScoreResponse, tags=["scoring"], dependencies=secured)
    async def score(body: ScoreRequest, request: Request) -> Response:
        """Score 1-100 leads, each by `lead_id` or inline; predictions in request order.

        Leads looked up by id are scored as of `as_of`, by default now (capped at the end of the service's
        data); inline leads as of `as_of`, by default now. Each prediction reports the `as_of` used.
        """
        state = _state(request)
        current = _champion(state)
        scorer = current.service
        by_id = [(i, item.lead_id) for i, item in enumerate(body.items) if item.lead_id is not None]
        inline = [(i, item.inline) for i, item in enumerate(body.items) if item.inline is not None]
        _check_score_request(state, body, by_id, inline)
        ids = [lead for _, lead in by_id]
        if not inline and body.as_of is None and len(ids) <= INLINE_SCORING_MAX_LEADS and scorer.ready_for(ids):
            # Leads by id at the default as_of, their features and store facts cached: a few rows of a
            # numpy matrix, no I/O, well under a millisecond; run here rather than pay the thread pool's
            # hand-off. Anything that may build features or query the store goes to the thread pool.
            records = _score_records(state, scorer, body, by_id, inline)
        else:  # feature builds (inline leads, an explicit as_of, a new snapshot): off the event loop
            records = await run_in_threadpool(_score_records, state, scorer, body, by_id, inline)
        return Response(predictions_json(records), media_type="application/json")

    @app.post("/v2/score", response_model=ScoreResultsResponse, tags=["scoring"], dependencies=secured)
    async def score_each(body: ScoreRequest, request: Request) -> Response:
        """Score 1-100 leads with one result each, in request order: `scored`, `not_open` or `unknown`.

        Same request as `/v1/score`. A lead that is not open at `as_of` (created later, converted or
        closed) or not in the service's data does not fail the request: its result says what it is (with
        its latest stored score). Only a malformed request fails (4xx).
        """
        state = _state(request)
        scorer = _champion(state).service
        _check_score_request(state, body, [], [(i, it.inline) for i, it in enumerate(body.items) if it.inline])
        ids = [item.lead_id for item in body.items if item.lead_id is not None]
        if state.history is None:  # inline leads were refused above: every lead by id is unknown here
            records = [
                {"index": i, "lead_id": item.key, "status": "unknown", "prediction": None, "not_open": None}
                for i, item in enumerate(body.items)
            ]
        elif len(ids) == len(body.items) <= INLINE_SCORING_MAX_LEADS and body.as_of is None and scorer.ready_for(ids):
            records = score_items(scorer, body, state.history.contract)  # cached: no I/O (see /v1/score)
        else:
            records = await run_in_threadpool(score_items, scorer, body, state.history.contract)
        return Response(results_json(records), media_type="application/json")

    @app.get(
        "/v1/leads/{lead_id}/score",
        response_model=Prediction,
        tags=["scoring"],
        dependencies=secured,
        responses={404: {"model": ErrorResponse, "description": "The lead has no batch score."}},
    )
    def latest_score(lead_id: LeadId, request: Request) -> Prediction:
        """The lead's latest batch score (the nightly `score-batch` run), reasons included when the batch kept them."""
        record = _state(request).store.latest_score(lead_id)
        if record is None:
            raise ApiError(404, "not_found", f"lead '{lead_id}' has no batch score")
        return Prediction.from_record(record)

    @app.get("/v1/handoff", response_model=HandoffQueuePage, tags=["handoff"], dependencies=secured)
    def handoff_queue(
        request: Request,
        limit: Annotated[int, Query(ge=1, le=MAX_QUEUE_LIMIT, description="Page size.")] = DEFAULT_QUEUE_LIMIT,
        offset: Annotated[int, Query(ge=0, le=MAX_QUEUE_OFFSET, description="Leads to skip.")] = 0,
    ) -> HandoffQueuePage:
        """The leads handed off on the current batch's decision day (UTC; a same-day re-run keeps the earlier
        run's handoffs), highest readiness first, each with the score of the batch that handed it off."""
        page = _state(request).store.handoff_queue(limit=limit, offset=offset)
        return HandoffQueuePage(
            items=[Prediction.from_record(r) for r in page.items],
            limit=page.limit,
            offset=page.offset,
            total=page.total,
            scored_at=page.batch.scored_at if page.batch is not None else None,
            policy_version=page.batch.policy_version if page.batch is not None else None,
        )

    @app.post(
        "/v1/feedback",
        response_model=FeedbackResponse,
        status_code=201,
        tags=["handoff"],
        dependencies=secured,
        responses={
            200: {"model": FeedbackResponse, "description": "The same feedback was already recorded (replay)."},
            404: {"model": ErrorResponse, "description": "No such handoff for this lead."},
            409: {"model": ErrorResponse, "description": "Different feedback is already recorded for this handoff."},
        },
    )
    def feedback(body: FeedbackRequest, request: Request, response: Response) -> FeedbackResponse:
        """Record sales' verdict on a handoff: 201 when stored, 200 when the identical feedback was already stored."""
        try:
            record = _state(request).store.record_feedback(
                body.lead_id, body.handoff_id, body.outcome, body.reason_code, body.text
            )
        except UnknownHandoffError:
            raise ApiError(404, "not_found", f"lead '{body.lead_id}' has no handoff '{body.handoff_id}'") from None
        except FeedbackConflictError:
            raise ApiError(
                409, "conflict", "different feedback is already recorded for this handoff; it is not overwritten"
            ) from None
        if not record.created:
            response.status_code = 200
        return FeedbackResponse.from_record(record)

    @app.get(
        "/v1/report",
        response_class=HTMLResponse,
        tags=["report"],
        dependencies=secured,
        responses={
            200: {"content": {"text/html": {}}, "description": "The latest alignment report (self-contained HTML)."},
            404: {"model": ErrorResponse, "description": "No report has been written yet."},
        },
    )
    def latest_report(request: Request) -> Response:
        """The latest alignment report for sales and marketing (one self-contained HTML page), for a CRM to link to."""
        path = _state(request).config.report_path
        try:
            body = path.read_bytes() if path is not None else None
        except FileNotFoundError:
            body = None
        if body is None:
            raise ApiError(
                404, "not_found", "no report has been written yet: run leadscore report (or the report flow)"
            )
        return Response(body, media_type="text/html; charset=utf-8", headers={"Cache-Control": "no-cache"})

    return app


def _model_ref(current: LoadedChampion[Any]) -> ModelRef:
    info = current.info
    return ModelRef(name=info.name or "unregistered", version=str(info.version or "unregistered"))


def _check_score_request(
    state: AppState, body: ScoreRequest, by_id: list[tuple[int, str]], inline: list[tuple[int, Any]]
) -> None:
    """422 for what does not fit the service's data (naming each field), 404 for unknown lead ids."""
    if state.history is None:
        problems = [
            FieldError(field=f"items.{i}.lead_id", message="this service has no prospect history to look it up in")
            for i, _ in by_id
        ] + [
            FieldError(field=f"items.{i}.inline", message="inline scoring needs the data contract (start with --data)")
            for i, _ in inline
        ]
    else:
        problems = body.contract_errors(state.history.contract)
    if problems:
        raise ApiError(422, "validation_error", "the request is invalid", problems)
    unknown = [(i, lead) for i, lead in by_id if lead not in state.known]
    if unknown:
        raise ApiError(
            404,
            "not_found",
            f"{len(unknown)} lead(s) are not in the prospect history",
            [FieldError(field=f"items.{i}.lead_id", message=f"unknown lead '{lead}'") for i, lead in unknown],
        )


def _score_records(
    state: AppState,
    scorer: Scorer,
    body: ScoreRequest,
    by_id: list[tuple[int, str]],
    inline: list[tuple[int, Any]],
) -> list[dict[str, Any]]:
    """The predictions of ``POST /v1/score`` as records shaped like :class:`Prediction`, in request order."""
    as_of = body.as_of.replace(microsecond=0) if body.as_of is not None else None
    predictions: dict[str, dict[str, Any]] = {}
    if by_id:
        ids = [lead for _, lead in by_id]
        try:
            scored = scorer.score_leads(ids, as_of, explain=body.explain).to_records()
        except LookupError:
            raise _not_open(state, scorer, by_id, as_of) from None
        predictions.update(zip(ids, scored, strict=True))
    if inline:
        assert state.history is not None  # _check_score_request: inline needs the data contract
        ids = [lead.lead_id for _, lead in inline]
        when = as_of or datetime.now(UTC).replace(microsecond=0)
        try:
            result = scorer.score_history(
                body.inline_history(state.history.contract), ids, when, explain=body.explain, as_records=True
            )
        except LookupError as exc:  # an inline lead created after as_of
            raise ApiError(
                422,
                "validation_error",
                "an inline lead is not open at as_of",
                [FieldError(field=f"items.{i}.inline", message=str(exc)) for i, _ in inline],
            ) from None
        predictions.update(zip(ids, result, strict=True))
    return [predictions[item.key] for item in body.items]


def _not_open(state: AppState, scorer: Scorer, by_id: list[tuple[int, str]], as_of: datetime | None) -> ApiError:
    """The 422 for known leads that are not open at as_of, naming exactly those items (one scoring pass)."""
    each = scorer.score_each([lead for _, lead in by_id], as_of, explain=False)
    closed = []
    for i, lead in by_id:
        if lead in each.not_open:
            found, _ = each.not_open[lead]
            what = f"{found.reason.replace('_', ' ')} ({found.at:%Y-%m-%dT%H:%M:%SZ})" if found else "closed"
            closed.append(FieldError(field=f"items.{i}.lead_id", message=f"lead '{lead}' is not open at as_of: {what}"))
    return ApiError(
        422,
        "validation_error",
        "lead(s) not open at as_of: not yet created, converted or closed",
        closed or [FieldError(field="items", message="a lead is not open at as_of")],
    )


def _parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
