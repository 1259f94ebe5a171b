"""Benchmark: the CRM endpoint under a CRM sync's request mix, alone, next to batch jobs, and across a promotion.

Issue 15: 200 requests/s for 60 s with the mix 80 % single lead with reasons, 20 % 50-lead batches, over all
leads of the demo data (open and not open), on ``POST /v2/score`` (one result per lead: ``scored``,
``not_open`` or ``unknown``, so closed leads do not fail a request). Three scenarios on one server:

- ``alone``: nothing else runs;
- ``contention``: a ``leadscore train`` and a ``leadscore score`` run on the same machine for the whole
  window (each restarted if it finishes early). The training goes to a scratch home (its own MLflow
  store), so it promotes nothing into the served registry; the scoring writes batches into the store the
  service reads, as the nightly job does;
  The jobs run as a user's would, so at ``LEADSCORE_BATCH_NICE`` (default 10: each lowers its own CPU
  priority and, leading its own session here as under systemd, its scheduler autogroup's);
- ``contention-nice0`` (not run by default): the same with ``LEADSCORE_BATCH_NICE=0``, the jobs at full
  priority (what every command did before the setting existed);
- ``contention-niced`` (not run by default): the same with the batch jobs at ``nice -n 19`` (and their
  scheduler autogroup at nice 19, without which nice does not rank them against the server);
- ``promotion``: halfway through, a new version of the champion is registered and the alias moved to it;
  the service (polling every ``--poll-seconds``) loads it and swaps it in while the load runs.

Goals: p99 of answered requests <= 100 ms, max of answered requests <= the deadline (the server's
``--deadline-seconds``, default 2 s: past it a request is shed with 503), zero connection errors, zero failed
requests during the swap. Outcomes: *answered* (200 with one valid result per lead, reasons on the singles
that were scored), *shed* (503 ``overloaded`` + Retry-After: the load shedder's answer past the in-flight
limit or the deadline), *failed* (anything else: another status, a bad body, no answer within
``--timeout``, a broken connection; connection errors are also counted on their own).

The load is open loop: request ``i`` is due at ``t0 + i / rate`` and sent then whatever happened before,
over as many keep-alive connections as needed (up to ``--max-connections``); latency is measured from the
due time to the last byte, so a slow answer cannot hide the queueing behind it. One client process
(asyncio, the minimal HTTP/1.1 client of ``bench_endpoint.py``) on the same machine as the server: it
competes for the same cores, and its own lag (how late it sent requests) is reported.

The data and model are prepared as in ``bench_endpoint.py`` (``leadscore generate --leads 20000 --seed 7``
and ``leadscore train`` into ``--workdir``, skipped when a champion exists); ``leadscore serve`` runs on a
free loopback port and is stopped at the end, also on an error or SIGTERM, and so are the batch jobs.

Usage::

    python benchmarks/bench_contention.py                          # 3 scenarios x 60 s at 200 req/s
    python benchmarks/bench_contention.py --seconds 10 --rate 50    # a short run
    python benchmarks/bench_contention.py --scenarios alone,promotion
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import contextlib

from bench_endpoint import (
    BIN,
    HOST,
    ROOT,
    Connection,
    ensure_model,
    free_port,
    group_cpu_seconds,
    percentile,
    post,
    start,
    stop,
    wait_http,
)

SCENARIOS = ("alone", "contention", "promotion", "contention-niced", "contention-nice0")
DEFAULT_SCENARIOS = ("alone", "contention", "promotion")
STARTED: list[subprocess.Popen[bytes]] = []  # every batch job started: all stopped at the end, whatever happens


# -- the load ------------------------------------------------------------------------------------------
@dataclass
class Outcome:
    kind: str  # "single" | "batch"
    due: float
    latency_ms: float
    result: str  # "answered" | "shed" | "failed"
    detail: str = ""


@dataclass
class Run:
    outcomes: list[Outcome] = field(default_factory=list)
    sent: int = 0
    max_in_flight: int = 0
    connections: int = 0
    connection_errors: int = 0
    max_send_lag_ms: float = 0.0


def check(kind: str, n_items: int, status: int, body: bytes) -> tuple[str, str]:
    """Classify one response: (answered | shed | failed, detail)."""
    if status == 503:
        try:
            code = orjson.loads(body)["error"]["code"]
        except Exception:
            return "failed", "503 with an unreadable body"
        return ("shed", "") if code == "overloaded" else ("failed", f"503 {code}")
    if status != 200:
        return "failed", f"HTTP {status}"
    try:
        results = orjson.loads(body)["results"]
    except Exception:
        return "failed", "200 with an unreadable body"
    if len(results) != n_items or any(r["status"] not in ("scored", "not_open", "unknown") for r in results):
        return "failed", "200 without one valid result per lead"
    if kind == "single" and results[0]["status"] == "scored" and not results[0]["prediction"]["reasons"]:
        return "failed", "scored single lead without reasons"
    return "answered", ""


async def open_loop(
    port: int,
    requests: list[tuple[str, int, bytes]],
    rate: float,
    seconds: float,
    timeout: float,
    max_connections: int,
) -> Run:
    """Send ``requests[i % len]`` at ``t0 + i / rate`` for ``seconds``; classify every answer."""
    loop = asyncio.get_running_loop()
    idle: list[Connection] = [await Connection.open(port) for _ in range(32)]
    run = Run(connections=len(idle))
    in_flight = 0

    async def fire(kind: str, n_items: int, raw: bytes, due: float) -> None:
        nonlocal in_flight
        in_flight += 1
        run.max_in_flight = max(run.max_in_flight, in_flight)
        conn: Connection | None = None
        try:
            if idle:
                conn = idle.pop()
            elif run.connections < max_connections:
                run.connections += 1
                conn = await Connection.open(port)
            else:
                run.outcomes.append(Outcome(kind, due, 0.0, "failed", "client: all connections busy"))
                return
            status, body = await asyncio.wait_for(conn.request(raw), timeout)
            latency = (loop.time() - due) * 1000.0
            result, detail = check(kind, n_items, status, body)
            run.outcomes.append(Outcome(kind, due, latency, result, detail))
            idle.append(conn)
        except TimeoutError:
            run.outcomes.append(Outcome(kind, due, (loop.time() - due) * 1000.0, "failed", "no answer in time"))
            if conn is not None:
                conn.close()
                run.connections -= 1
        except (OSError, asyncio.IncompleteReadError) as exc:
            run.connection_errors += 1
            run.outcomes.append(Outcome(kind, due, (loop.time() - due) * 1000.0, "failed", type(exc).__name__))
            if conn is not None:
                conn.close()
                run.connections -= 1
        finally:
            in_flight -= 1

    tasks = []
    total = int(rate * seconds)
    t0 = loop.time() + 0.05
    for i in range(total):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            run.max_send_lag_ms = max(run.max_send_lag_ms, -delay * 1000.0)
        kind, n_items, raw = requests[i % len(requests)]
        tasks.append(asyncio.create_task(fire(kind, n_items, raw, due)))
        run.sent += 1
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return run


def build_requests(
    lead_ids: list[str], port: int, auth: dict[str, str], n: int, batch_share: float, batch_size: int, seed: int
) -> list[tuple[str, int, bytes]]:
    """A fixed pseudo-random sequence of the mix: (kind, number of leads, encoded request)."""
    rng = random.Random(seed)
    out: list[tuple[str, int, bytes]] = []
    for _ in range(n):
        if rng.random() < batch_share:
            body: dict[str, Any] = {"items": [{"lead_id": x} for x in rng.sample(lead_ids, batch_size)]}
            body["explain"] = False
            out.append(("batch", batch_size, post("/v2/score", body, port, auth)))
        else:
            body = {"items": [{"lead_id": rng.choice(lead_ids)}], "explain": True}
            out.append(("single", 1, post("/v2/score", body, port, auth)))
    return out


# -- the scenarios ---------------------------------------------------------------------------------------
class Jobs:
    """Batch jobs restarted until stopped (each in its own process group, stopped with it)."""

    def __init__(self, commands: list[tuple[str, list[str], dict[str, str]]], logs: Path, nice: bool = False) -> None:
        self.nice = nice
        self.commands = commands
        self.logs = logs
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.runs: dict[str, int] = {name: 0 for name, _, _ in commands}
        self.failed: dict[str, int] = {name: 0 for name, _, _ in commands}
        self._stop = False

    def _launch(self, name: str, cmd: list[str], env: dict[str, str]) -> None:
        self.runs[name] += 1
        self.procs[name] = start(cmd, env, self.logs / f"{name}-{self.runs[name]}.log")
        STARTED.append(self.procs[name])
        if self.nice:
            # Each job is a session of its own (start_new_session): with the scheduler's autogroups
            # (/proc/sys/kernel/sched_autogroup_enabled) a process's nice value only ranks it within its
            # session, so the session's autogroup gets the nice value too.
            with contextlib.suppress(OSError):
                Path(f"/proc/{self.procs[name].pid}/autogroup").write_text("19")

    async def keep_running(self) -> None:
        for name, cmd, env in self.commands:
            self._launch(name, cmd, env)
        while not self._stop:
            await asyncio.sleep(0.5)
            for name, cmd, env in self.commands:
                code = self.procs[name].poll()
                if code is not None and not self._stop:
                    self.failed[name] += code != 0
                    self._launch(name, cmd, env)

    def stop(self) -> None:
        self._stop = True
        for proc in self.procs.values():
            stop(proc)


def ready_version(port: int, auth: dict[str, str]) -> str | None:
    request = urllib.request.Request(f"http://{HOST}:{port}/ready", headers=auth)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return str(json.loads(response.read())["model"]["version"])
    except Exception:
        return None


def promote_copy(tracking_uri: str) -> str:
    """Register a new version of the champion (same artifacts: the load work of a real promotion) and move
    the alias to it; returns the new version."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    champion = client.get_model_version_by_alias("leadscore", "champion")
    new = client.create_model_version("leadscore", champion.source, run_id=champion.run_id)
    client.set_registered_model_alias("leadscore", "champion", str(new.version))
    return str(new.version)


async def scenario(
    name: str, args: argparse.Namespace, port: int, auth: dict[str, str], requests: list[Any], ctx: dict[str, Any]
) -> dict[str, Any]:
    jobs: Jobs | None = None
    extra: dict[str, Any] = {}
    load_before = os.getloadavg()
    if name in ("contention", "contention-niced", "contention-nice0"):
        scratch = ctx["workdir"] / "contention-home"
        job_env = {**ctx["env"], "LEADSCORE_BATCH_NICE": "0"} if name == "contention-nice0" else ctx["env"]
        train_env = {
            **job_env,
            "LEADSCORE_HOME": str(scratch),
            "LEADSCORE_MLFLOW_TRACKING_URI": f"sqlite:///{scratch / 'mlflow.db'}",
        }
        leadscore = str(BIN / "leadscore")
        nice = ["nice", "-n", "19"] if name == "contention-niced" else []
        data = str(ctx["data"])
        jobs = Jobs(
            [
                ("train", [*nice, leadscore, "train", "--data", data, "--work-dir", str(scratch / "work")], train_env),
                ("score", [*nice, leadscore, "score", "--data", data], job_env),
            ],
            ctx["workdir"],
            nice=bool(nice),
        )
    loop = asyncio.get_running_loop()
    cpu_before, wall_before = group_cpu_seconds(ctx["server_pgid"]), time.monotonic()
    keeper = asyncio.create_task(jobs.keep_running()) if jobs is not None else None
    swap: dict[str, Any] = {}

    async def promote_midway() -> None:
        await asyncio.sleep(args.seconds / 2)
        before = await loop.run_in_executor(None, ready_version, port, auth)
        swap["at"] = loop.time()
        swap["version"] = await loop.run_in_executor(None, promote_copy, ctx["tracking_uri"])
        swap["from"] = before
        while loop.time() - swap["at"] < args.seconds:
            if await loop.run_in_executor(None, ready_version, port, auth) == swap["version"]:
                swap["served_at"] = loop.time()
                return
            await asyncio.sleep(0.25)

    promoter = asyncio.create_task(promote_midway()) if name == "promotion" else None
    try:
        run = await open_loop(port, requests, args.rate, args.seconds, args.timeout, args.max_connections)
    finally:
        if jobs is not None:
            jobs.stop()
        if keeper is not None:
            await keeper
    if promoter is not None:
        await promoter
        if "served_at" in swap:
            # the swap window: from the promotion until the new version serves, plus the poll interval
            lo, hi = swap["at"], swap["served_at"] + args.poll_seconds
            during = [o for o in run.outcomes if lo <= o.due <= hi]
            extra["swap"] = {
                "from_version": swap["from"],
                "to_version": swap["version"],
                "seconds_to_serve": round(swap["served_at"] - swap["at"], 2),
                "requests_in_window": len(during),
                "failed_in_window": sum(o.result == "failed" for o in during),
                "shed_in_window": sum(o.result == "shed" for o in during),
            }
        else:
            extra["swap"] = {"to_version": swap.get("version"), "error": "the new version was never served"}
    if jobs is not None:
        extra["jobs"] = {"runs": dict(jobs.runs), "failed_runs": dict(jobs.failed)}
    # CPU the server process got (cores): under contention it is what the batch jobs leave it
    extra["server_cpu_cores"] = round(
        (group_cpu_seconds(ctx["server_pgid"]) - cpu_before) / (time.monotonic() - wall_before), 2
    )
    t0 = min((o.due for o in run.outcomes), default=0.0)
    extra["timeline"] = timeline(run.outcomes, t0, args.seconds, swap.get("at"), swap.get("served_at"))
    return summarise(name, run, args, load_before, os.getloadavg(), extra)


def timeline(
    outcomes: list[Outcome], t0: float, seconds: float, swap_at: float | None, served_at: float | None
) -> list[str]:
    """One line per 5 s of due times: answered/shed/failed and the answered p99 (and where the swap was)."""
    lines = []
    step = 5.0
    for k in range(int(np.ceil(seconds / step))):
        lo, hi = t0 + k * step, t0 + (k + 1) * step
        part = [o for o in outcomes if lo <= o.due < hi]
        ok = [o.latency_ms for o in part if o.result == "answered"]
        mark = ""
        if swap_at is not None and lo <= swap_at < hi:
            mark += " <- promoted"
        if served_at is not None and lo <= served_at < hi:
            mark += " <- new version serving"
        shed = sum(o.result == "shed" for o in part)
        failed = sum(o.result == "failed" for o in part)
        p99 = fmt(percentile(ok, 99) if ok else None)
        window = f"{k * step:.0f}-{(k + 1) * step:.0f} s"
        lines.append(f"{window:>9} answered {len(ok):5d} shed {shed:5d} failed {failed:4d} p99 {p99:>8} ms{mark}")
    return lines


def summarise(
    name: str,
    run: Run,
    args: argparse.Namespace,
    load_before: tuple[float, ...],
    load_after: tuple[float, ...],
    extra: dict[str, Any],
) -> dict[str, Any]:
    answered = [o for o in run.outcomes if o.result == "answered"]
    lat = [o.latency_ms for o in answered]
    failures: dict[str, int] = {}
    for o in run.outcomes:
        if o.result == "failed":
            failures[o.detail] = failures.get(o.detail, 0) + 1

    def stats(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"p50": None, "p99": None, "max": None}
        return {"p50": statistics.median(values), "p99": percentile(values, 99), "max": max(values)}

    out: dict[str, Any] = {
        "scenario": name,
        "sent": run.sent,
        "answered": len(answered),
        "shed": sum(o.result == "shed" for o in run.outcomes),
        "failed": sum(o.result == "failed" for o in run.outcomes),
        "connection_errors": run.connection_errors,
        "failures": failures,
        "answered_ms": stats(lat),
        "single_ms": stats([o.latency_ms for o in answered if o.kind == "single"]),
        "batch_ms": stats([o.latency_ms for o in answered if o.kind == "batch"]),
        "max_in_flight_client": run.max_in_flight,
        "connections": run.connections,
        "client_max_send_lag_ms": round(run.max_send_lag_ms, 1),
        "loadavg_before": [round(x, 2) for x in load_before],
        "loadavg_after": [round(x, 2) for x in load_after],
        **extra,
    }
    p99, mx = out["answered_ms"]["p99"], out["answered_ms"]["max"]
    goals = {
        "p99<=100ms": p99 is not None and p99 <= 100.0,
        "max<=deadline": mx is not None and mx <= args.deadline_seconds * 1000.0,
        "no_connection_errors": run.connection_errors == 0,
    }
    if "swap" in extra:
        goals["no_failed_during_swap"] = extra["swap"].get("failed_in_window") == 0
    out["goals"] = goals
    return out


def fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def print_table(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(
        f"\n{args.rate:g} req/s x {args.seconds:g} s per scenario; mix {100 - 100 * args.batch_share:.0f} % single "
        f"lead with reasons, {100 * args.batch_share:.0f} % {args.batch_size}-lead batches; POST /v2/score; "
        f"deadline {args.deadline_seconds:g} s, max in flight {args.max_in_flight}; nproc {os.cpu_count()}"
    )
    head = (
        "| scenario | sent | answered | shed | failed | conn. errors | p50 ms | p99 ms | max ms "
        "| single p99 | batch p99 | loadavg 1m (before/after) |"
    )
    print(head)
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        a = r["answered_ms"]
        print(
            f"| {r['scenario']} | {r['sent']} | {r['answered']} | {r['shed']} | {r['failed']} | "
            f"{r['connection_errors']} | {fmt(a['p50'])} | {fmt(a['p99'])} | {fmt(a['max'])} | "
            f"{fmt(r['single_ms']['p99'])} | {fmt(r['batch_ms']['p99'])} | "
            f"{r['loadavg_before'][0]} / {r['loadavg_after'][0]} |"
        )
    for r in rows:
        goals = ", ".join(f"{k} {'met' if v else 'NOT met'}" for k, v in r["goals"].items())
        print(f"- {r['scenario']}: {goals}")
        if r["failures"]:
            print(f"  failures: {r['failures']}")
        if "swap" in r:
            print(f"  swap: {r['swap']}")
        if "jobs" in r:
            print(f"  batch jobs: {r['jobs']}")
        print(f"  server CPU: {r['server_cpu_cores']} cores; client max send lag {r['client_max_send_lag_ms']} ms")
        for line in r["timeline"]:
            print(f"    {line}")


# -- main ------------------------------------------------------------------------------------------------
def _terminate(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, default=ROOT / ".leadscore" / "bench-contention")
    parser.add_argument("--leads", type=int, default=20_000, help="leads to simulate when no model exists yet")
    parser.add_argument("--rate", type=float, default=200.0, help="requests a second (open loop)")
    parser.add_argument("--seconds", type=float, default=60.0, help="length of each scenario")
    parser.add_argument(
        "--scenarios",
        default=",".join(DEFAULT_SCENARIOS),
        help=f"comma-separated, of {', '.join(SCENARIOS)} (contention-niced: the batch jobs at nice 19)",
    )
    parser.add_argument("--batch-share", type=float, default=0.2)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--deadline-seconds", type=float, default=2.0, help="the server's request deadline")
    parser.add_argument("--max-in-flight", type=int, default=64, help="the server's in-flight limit")
    parser.add_argument("--poll-seconds", type=float, default=2.0, help="the server's champion poll interval")
    parser.add_argument("--timeout", type=float, default=10.0, help="client: no answer after this = failed")
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    names = [s for s in args.scenarios.split(",") if s]
    unknown = set(names) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)} (choose from {', '.join(SCENARIOS)})")

    # SIGTERM ends the run like Ctrl-C: the finally blocks stop the server and the batch jobs.
    signal.signal(signal.SIGTERM, _terminate)

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    home = workdir / "home"
    key = secrets.token_urlsafe(32)
    tracking_uri = f"sqlite:///{home / 'mlflow.db'}"
    env = {
        **os.environ,
        "LEADSCORE_HOME": str(home),
        "LEADSCORE_MLFLOW_TRACKING_URI": tracking_uri,
        "MLFLOW_TRACKING_URI": tracking_uri,
        "LEADSCORE_API_KEYS": f"bench:{key}",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "true",
        "OMP_WAIT_POLICY": "PASSIVE",
    }
    env.pop("LEADSCORE_STORE_URL", None)  # the home's SQLite store, shared by the service and `leadscore score`
    os.environ.update({k: env[k] for k in ("MLFLOW_TRACKING_URI", "MLFLOW_DISABLE_TELEMETRY")})
    data = ensure_model(workdir, args.leads, env)
    import pandas as pd

    from features.io import find_table

    lead_ids = pd.read_parquet(find_table(data, "leads"), columns=["lead_id"])["lead_id"].astype(str).tolist()
    print(
        f"{len(lead_ids):,} leads in {data} (open and not open); machine: nproc {os.cpu_count()}, "
        f"loadavg {os.getloadavg()}"
    )

    port = free_port()
    log = workdir / "serve.log"
    serve = start(
        [
            *(str(BIN / "leadscore"), "serve", "--data", str(data), "--host", HOST, "--port", str(port)),
            *("--poll-seconds", str(args.poll_seconds), "--deadline-seconds", str(args.deadline_seconds)),
            *("--max-in-flight", str(args.max_in_flight), "--log-level", "warning", "--no-access-log"),
        ],
        env,
        log,
    )
    rows: list[dict[str, Any]] = []
    try:
        auth = {"Authorization": f"Bearer {key}"}
        t = time.monotonic()
        wait_http(f"http://{HOST}:{port}/ready", serve, log, auth, timeout=600)
        print(f"leadscore serve ready in {time.monotonic() - t:.1f} s on {HOST}:{port}")
        requests = build_requests(lead_ids, port, auth, 5000, args.batch_share, args.batch_size, seed=15)
        warm = max(10.0, args.rate / 4)  # warm-up (not measured): caches, connections, code paths
        asyncio.run(open_loop(port, requests[::-1], warm, 3.0, args.timeout, args.max_connections))
        gc.collect()
        gc.freeze()  # the client's pandas/MLflow objects: no full collection pauses inside the measurement
        ctx = {"workdir": workdir, "env": env, "data": data, "tracking_uri": tracking_uri, "server_pgid": serve.pid}
        for name in names:
            print(f"\n== {name}: {args.rate:g} req/s for {args.seconds:g} s", flush=True)
            row = asyncio.run(scenario(name, args, port, auth, requests, ctx))
            rows.append(row)
            print(json.dumps(row, indent=1, default=str), flush=True)
            time.sleep(3.0)  # let the machine settle between scenarios
    finally:
        for proc in STARTED:
            stop(proc)
        stop(serve)
    print_table(rows, args)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
