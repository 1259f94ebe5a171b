"""Load shedding (deadline, in-flight bound) and per-key rate limits answer at once with Retry-After."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from serving.limits import LoadShedder, RateLimiter


def _slow_app(seconds: float, *, in_thread: bool = False) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] != "/fast":
            if in_thread:
                await run_in_threadpool(time.sleep, seconds)
            else:
                await asyncio.sleep(seconds)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def _client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize("in_thread", [False, True], ids=["async", "thread-pool"])
def test_a_request_past_its_deadline_gets_503_at_the_deadline(in_thread: bool) -> None:
    shedder = LoadShedder(_slow_app(1.5, in_thread=in_thread), max_in_flight=4, deadline_seconds=0.2)

    async def main() -> tuple[httpx.Response, float, httpx.Response]:
        async with _client(shedder) as client:
            started = time.perf_counter()
            slow = await client.get("/slow")
            took = time.perf_counter() - started
            fast = await client.get("/fast")
            return slow, took, fast

    slow, took, fast = asyncio.run(main())
    assert slow.status_code == 503
    assert slow.headers["retry-after"] == "1"
    assert slow.json()["error"]["code"] == "overloaded"
    assert took < 1.0  # answered at the deadline, not when the work ended
    assert fast.status_code == 200


def test_requests_past_the_in_flight_bound_are_shed_at_once() -> None:
    release = threading.Event()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await run_in_threadpool(release.wait, 5)
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    shedder = LoadShedder(app, max_in_flight=2, deadline_seconds=5)

    async def main() -> list[int]:
        async with _client(shedder) as client:
            held = [asyncio.ensure_future(client.get("/score")) for _ in range(2)]
            while shedder.in_flight < 2:
                await asyncio.sleep(0.01)
            started = time.perf_counter()
            extra = await client.get("/score")
            assert time.perf_counter() - started < 0.5
            assert extra.headers["retry-after"]
            release.set()
            return [extra.status_code, *[(await h).status_code for h in held]]

    assert asyncio.run(main()) == [503, 200, 200]
    assert shedder.in_flight == 0 and shedder.shed == 1


def test_work_abandoned_at_the_deadline_still_counts_until_it_ends() -> None:
    shedder = LoadShedder(_slow_app(0.6, in_thread=True), max_in_flight=1, deadline_seconds=0.1)

    async def main() -> tuple[int, int, int]:
        async with _client(shedder) as client:
            first = await client.get("/slow")  # 503 at 0.1 s; its thread runs on until 0.6 s
            during = await client.get("/fast")  # the bound still holds the abandoned work
            await asyncio.sleep(0.8)
            after = await client.get("/fast")
            return first.status_code, during.status_code, after.status_code

    assert asyncio.run(main()) == (503, 503, 200)


def test_health_is_never_shed() -> None:
    shedder = LoadShedder(_slow_app(0.3), max_in_flight=1, deadline_seconds=0.05)

    async def main() -> int:
        async with _client(shedder) as client:
            return (await client.get("/health")).status_code

    assert asyncio.run(main()) == 200


def test_rate_limit_is_per_key_with_retry_after() -> None:
    limiter = RateLimiter(_slow_app(0), rate=2, burst=2)

    async def main() -> tuple[list[int], httpx.Response, int, int]:
        async with _client(limiter) as client:
            a = {"Authorization": "Bearer key-a"}
            codes = [(await client.get("/fast", headers=a)).status_code for _ in range(3)]
            limited = await client.get("/fast", headers=a)
            other = (await client.get("/fast", headers={"Authorization": "Bearer key-b"})).status_code
            await asyncio.sleep(0.6)
            again = (await client.get("/fast", headers=a)).status_code
            return codes, limited, other, again

    codes, limited, other, again = asyncio.run(main())
    assert codes == [200, 200, 429]
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
    assert limited.json()["error"]["code"] == "rate_limited"
    assert other == 200 and again == 200


def test_invalid_limits_are_refused() -> None:
    with pytest.raises(ValueError, match="max_in_flight"):
        LoadShedder(_slow_app(0), max_in_flight=0, deadline_seconds=1)
    with pytest.raises(ValueError, match="deadline"):
        LoadShedder(_slow_app(0), max_in_flight=1, deadline_seconds=0)
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(_slow_app(0), rate=0)
