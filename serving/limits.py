"""Load shedding and per-key rate limits: answer ``503``/``429`` with ``Retry-After`` at once, never queue.

A CRM that syncs all its leads can send more than the service can score; queueing without limit turned a
200 req/s burst into a p99 of 47 s (issue 15). :class:`LoadShedder` (pure ASGI, in front of the app) keeps
at most ``max_in_flight`` requests in progress and gives each a ``deadline_seconds`` budget: a request past
the limit, or one not answered within its deadline, gets ``503`` + ``Retry-After`` immediately. Work a
timed-out request started in the thread pool cannot be interrupted; it still counts as in flight until it
finishes, so the bound holds. :class:`RateLimiter` is a token bucket per API key (off unless configured).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import threading
import time
from dataclasses import dataclass

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DEFAULT_DEADLINE_SECONDS = 2.0
DEFAULT_MAX_IN_FLIGHT = 64
EXEMPT_PATHS = frozenset({"/health"})


async def send_error(
    send: Send, status: int, code: str, message: str, retry_after: int, request_id: str | None
) -> None:
    """The API's JSON error body (``ErrorResponse`` shape) with ``Retry-After``."""
    body = orjson.dumps({"error": {"code": code, "message": message, "fields": [], "request_id": request_id}})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", str(retry_after).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _request_id(scope: Scope) -> str | None:
    state = scope.get("state") or {}
    value = state.get("request_id")
    return value if isinstance(value, str) else None


class LoadShedder:
    """Bound the requests in progress and the time each may take (see the module docstring)."""

    def __init__(self, app: ASGIApp, *, max_in_flight: int, deadline_seconds: float) -> None:
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be >= 1, got {max_in_flight}")
        if not deadline_seconds > 0:
            raise ValueError(f"deadline_seconds must be > 0, got {deadline_seconds}")
        self.app = app
        self.max_in_flight = max_in_flight
        self.deadline_seconds = deadline_seconds
        self.in_flight = 0
        self.shed = 0  # requests answered 503 (over the limit or past the deadline), for tests and logs
        self._retry_after = max(1, math.ceil(deadline_seconds))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.max_in_flight:
            self.shed += 1
            await send_error(
                send,
                503,
                "overloaded",
                "the service is at capacity; retry later",
                self._retry_after,
                _request_id(scope),
            )
            return
        self.in_flight += 1
        started = False
        abandoned = False

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if abandoned:
                return  # the client already got its 503
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        task = asyncio.ensure_future(self.app(scope, receive, guarded_send))
        task.add_done_callback(self._finished)
        done, _ = await asyncio.wait({task}, timeout=self.deadline_seconds)
        if done:
            task.result()  # re-raise what the app raised
            return
        if started:  # the response is under way: let it finish
            await task
            return
        abandoned = True
        self.shed += 1
        await send_error(
            send,
            503,
            "overloaded",
            f"the request was not answered within its {self.deadline_seconds:g} s deadline; retry later",
            self._retry_after,
            _request_id(scope),
        )

    def _finished(self, task: asyncio.Future[None]) -> None:
        self.in_flight -= 1
        if not task.cancelled():
            task.exception()  # retrieved: an abandoned request's error is not "never retrieved"


@dataclass
class _Bucket:
    tokens: float
    updated: float


class RateLimiter:
    """Token bucket per API key: ``rate`` requests a second, bursts of up to ``burst``; ``429`` past it.

    Keys are told apart by a hash of the bearer token (the token itself is never kept); requests without
    a token pass through to authentication, which refuses them.
    """

    def __init__(self, app: ASGIApp, *, rate: float, burst: int | None = None) -> None:
        if not rate > 0:
            raise ValueError(f"rate must be > 0 requests a second, got {rate}")
        self.app = app
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(1, math.ceil(rate)))
        if self.burst < 1:
            raise ValueError(f"burst must be >= 1, got {burst}")
        self._buckets: dict[bytes, _Bucket] = {}
        self._lock = threading.Lock()

    def _take(self, key: bytes) -> float:
        """0 when a request may go ahead, else the seconds until it may."""
        now = time.monotonic()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                if len(self._buckets) > 100_000:  # bound memory against random tokens
                    self._buckets.clear()
                bucket = self._buckets[key] = _Bucket(self.burst, now)
            bucket.tokens = min(self.burst, bucket.tokens + (now - bucket.updated) * self.rate)
            bucket.updated = now
            if bucket.tokens >= 1:
                bucket.tokens -= 1
                return 0.0
            return (1 - bucket.tokens) / self.rate

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        token = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        if token is None:
            await self.app(scope, receive, send)
            return
        wait = self._take(hashlib.sha256(token).digest())
        if wait > 0:
            await send_error(
                send,
                429,
                "rate_limited",
                "too many requests for this API key",
                max(1, math.ceil(wait)),
                _request_id(scope),
            )
            return
        await self.app(scope, receive, send)
