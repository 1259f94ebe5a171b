"""Benchmark (issue 14): feature build and batch scoring, single machine vs a LocalCluster, by data size.

For each size (``--sizes``, simulated leads) it measures four steps, each in its own child process, one
after another (never two at once):

- ``single features``: the single-machine feature build of the plain data directory (validate, weekly
  snapshots over the simulator's two years, point-in-time features, Parquet): what ``leadscore features
  --data PLAIN --out F.parquet`` runs, without the Prefect flow wrapper.
- ``dask features``: the partitioned build of the partitioned copy on a ``LocalCluster`` of ``--workers``
  worker processes (one thread each, ``--worker-memory-limit`` each): ``leadscore features --data PART
  --cluster local:2``.
- ``single score``: :func:`serving.batch.score_batch` of the plain directory (features at the batch's
  ``as_of``, scores, reasons, handoffs, write to a fresh SQLite store).
- ``dask score``: :func:`serving.partitioned_batch.score_partitioned_batch` of the partitioned copy on the
  LocalCluster (``leadscore score --data PART --cluster local:2``).

Memory is measured per process. A single-machine child runs under ``RLIMIT_AS`` (``--single-memory-limit``
GB of address space), so that it fails with ``MemoryError`` (reported ``OOM at cap``) instead of waking
the kernel's OOM killer on a shared machine; its peak RSS is the kernel's figure from ``wait4``. For Dask:
the client process' peak RSS (``wait4``), and each worker's peak, from polling its RSS every 0.2 s
(psutil) and the worker's own high-water mark (VmHWM) read at the end. The workers' memory limit is
enforced by their nannies (a worker over 95 % of it is restarted; a task that kills workers repeatedly
fails the step).

Data is simulated once per size (seed 7) into /tmp/leadscore-scale-<N> and partitioned into
/tmp/leadscore-scale-<N>-p<P> (``--rows-per-partition`` leads per partition, at least one partition per
worker), both reused when present. The scoring model is trained once (not measured) on a small simulated
set (``--train-leads``, snapshots every 28 days) and cached. Results are printed as a table and written as
JSON (``--json``) after every step.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/bench_scale.py --sizes 5000,20000
    nohup .venv/bin/python benchmarks/bench_scale.py --sizes 100000,300000,1000000 > /tmp/bench_scale.log 2>&1 &
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEED = 7
CACHE_PREFIX = "/tmp/leadscore-scale"
MARKER = "bench_scale.json"
OOM_EXIT = 3
GB = 1024**3


# -- memory --------------------------------------------------------------------------------------


def _status_mb(field: str, pid: str = "self") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _warm_up() -> None:
    import importlib

    for name in ("features.partitioned", "serving.partitioned_batch", "lightgbm"):
        importlib.import_module(name)


def _worker_hwm_mb() -> float:
    """A worker's own peak RSS (run on the worker by ``client.run``)."""
    return _status_mb("VmHWM")


class WorkerPoller:
    """Polls the RSS of this process' children (the LocalCluster's worker processes) in a thread."""

    def __init__(self, interval: float = 0.2) -> None:
        import psutil

        self._me = psutil.Process()
        self.interval = interval
        self.peak: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-poller", daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            for child in self._me.children(recursive=True):
                try:
                    if "resource_tracker" in " ".join(child.cmdline()):
                        continue
                    rss = child.memory_info().rss / 2**20
                except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                    continue
                self.peak[child.pid] = max(self.peak.get(child.pid, 0.0), rss)
            self._stop.wait(self.interval)

    def __enter__(self) -> WorkerPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# -- child steps (run in a fresh process: ``bench_scale.py --child STEP ...``) ------------------------


def _policy() -> Any:
    import yaml

    from serving.policy import load_policy, parse_policy

    # As in bench_score_batch: the simulator's readiness is a few percent, so grade with the model's cut-offs.
    raw = load_policy().model_dump(mode="json")
    raw["grading"] = {"mode": "model"}
    return parse_policy(yaml.safe_dump(raw), source="packaged policy, model cut-offs")


class _Info:
    name = "bench-scale"
    version = 1
    run_id = None
    model_uri = "benchmark"


def _feature_config() -> Any:
    from pipelines.config import load_config

    return load_config(None).features  # the `leadscore features` defaults: weekly snapshots


def child_generate(args: argparse.Namespace) -> dict[str, Any]:
    from features.simulator import generate

    out = Path(args.data)
    tmp = out.with_name(f".{out.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    started = time.perf_counter()
    summary = generate(args.leads, SEED, tmp)
    seconds = time.perf_counter() - started
    marker = {"leads": summary.n_leads, "activities": summary.n_activities, "seed": SEED, "generate_s": seconds}
    (tmp / MARKER).write_text(json.dumps(marker))
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    return marker


def child_partition(args: argparse.Namespace) -> dict[str, Any]:
    from features.partitioned import partition_data_dir

    started = time.perf_counter()
    layout = partition_data_dir(args.source, args.data, args.partitions)
    return {"partitions": layout.n_partitions, "partition_s": time.perf_counter() - started}


def child_train(args: argparse.Namespace) -> dict[str, Any]:
    from features.build import build_features
    from features.simulator import generate
    from features.snapshots import configured_snapshot_dates
    from features.validation import load_history
    from models.config import load_train_config
    from models.fit.training import train_models
    from models.package.bundle import write_scoring_model

    data = Path(args.data)
    if not (data / "contract.yaml").exists():
        generate(args.leads, SEED, data)
    history = load_history(data).history
    config = _feature_config().model_copy(update={"snapshot_every_days": 28})
    started = time.perf_counter()
    frame, spec = build_features(history, configured_snapshot_dates(history, config), config)
    result = train_models(frame, spec, load_train_config())
    write_scoring_model(result.model, args.model)
    return {"rows": len(frame), "train_s": time.perf_counter() - started}


def child_single_features(args: argparse.Namespace) -> dict[str, Any]:
    from features.build import build_features
    from features.snapshots import configured_snapshot_dates
    from features.spec import write_feature_table
    from features.validation import load_history

    config = _feature_config()
    t0 = time.perf_counter()
    history = load_history(args.data).history
    t1 = time.perf_counter()
    dates = configured_snapshot_dates(history, config)
    frame, spec = build_features(history, dates, config)
    t2 = time.perf_counter()
    write_feature_table(frame, spec, Path(args.out))
    t3 = time.perf_counter()
    return {
        "rows": len(frame),
        "snapshots": len(dates),
        "work_wall_s": t3 - t0,
        "seconds": {"validate": t1 - t0, "build": t2 - t1, "write": t3 - t2},
    }


def child_single_score(args: argparse.Namespace) -> dict[str, Any]:
    from features.validation import load_history
    from models.package.bundle import read_scoring_model
    from serving.batch import score_batch
    from serving.stores import ScoreStore

    model = read_scoring_model(args.model)
    policy = _policy()
    t0 = time.perf_counter()
    history = load_history(args.data).history
    t1 = time.perf_counter()
    store = ScoreStore(f"sqlite:///{Path(args.out) / 'leadscore.db'}")
    try:
        summary = score_batch(history, model, _Info(), policy, store)
    finally:
        store.close()
    t2 = time.perf_counter()
    return {
        "rows": summary.n_leads,
        "handoffs": summary.n_handoffs,
        "explained": summary.n_explained,
        "work_wall_s": t2 - t0,
        "seconds": {"validate": t1 - t0, "score": t2 - t1, **{k: float(v) for k, v in summary.timings.items()}},
    }


def _dask_step(args: argparse.Namespace, work: Any) -> dict[str, Any]:
    import dask

    from pipelines.dask_runner import open_cluster

    dask.config.set({"distributed.admin.system-monitor.gil.enabled": False})
    t0 = time.perf_counter()
    with open_cluster(f"local:{args.workers}", memory_limit=args.worker_memory_limit) as client:
        client.run(_warm_up)  # imports on the workers, as the single-machine child has them before timing
        startup = time.perf_counter() - t0
        with WorkerPoller() as poller:
            t1 = time.perf_counter()
            result = work(client)
            wall = time.perf_counter() - t1
            hwm = client.run(_worker_hwm_mb)
        # Workers still alive at the end: their own high-water mark; every worker seen: the polled peak.
        alive = {int(info["pid"]) for info in client.scheduler_info()["workers"].values() if "pid" in info}
    per_pid = dict(poller.peak)
    worker_peaks = [max(per_pid.get(pid, 0.0), 0.0) for pid in per_pid]
    result.update(
        work_wall_s=wall,
        cluster_startup_s=startup,
        worker_hwm_mb=sorted(hwm.values(), reverse=True),
        worker_polled_peak_mb=sorted(worker_peaks, reverse=True),
        worker_processes_seen=len(per_pid),
        worker_processes_alive=len(alive) or len(hwm),
        max_worker_peak_mb=max([*hwm.values(), *worker_peaks], default=float("nan")),
    )
    return result


def child_dask_features(args: argparse.Namespace) -> dict[str, Any]:
    from features.distributed import dask_mapper
    from features.partitioned import build_partitioned_features

    def work(client: Any) -> dict[str, Any]:
        summary = build_partitioned_features(args.data, args.out, _feature_config(), mapper=dask_mapper(client))
        return {
            "rows": summary.rows,
            "snapshots": len(summary.dates),
            "partitions": summary.n_partitions,
            "seconds": dict(summary.seconds),
        }

    return _dask_step(args, work)


def child_dask_score(args: argparse.Namespace) -> dict[str, Any]:
    from models.package.bundle import read_scoring_model
    from pipelines.dask_runner import DaskPartitionRunner
    from serving.partitioned_batch import score_partitioned_batch
    from serving.stores import ScoreStore

    model = read_scoring_model(args.model)
    policy = _policy()

    def work(client: Any) -> dict[str, Any]:
        store = ScoreStore(f"sqlite:///{Path(args.out) / 'leadscore.db'}")
        try:
            summary = score_partitioned_batch(
                args.data, model, _Info(), policy, store, runner=DaskPartitionRunner(client)
            )
        finally:
            store.close()
        return {
            "rows": summary.n_leads,
            "handoffs": summary.n_handoffs,
            "explained": summary.n_explained,
            "seconds": {k: float(v) for k, v in summary.timings.items()},
        }

    return _dask_step(args, work)


CHILDREN = {
    "generate": child_generate,
    "partition": child_partition,
    "train": child_train,
    "single-features": child_single_features,
    "single-score": child_single_score,
    "dask-features": child_dask_features,
    "dask-score": child_dask_score,
}


def _is_memory_error(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, MemoryError) or "bad_alloc" in str(seen) or "Cannot allocate memory" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _exit_on_signal(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def run_child(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _exit_on_signal)
    if args.address_space_gb:
        cap = int(args.address_space_gb * GB)
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))
    result_file = Path(args.result_file)
    try:
        result = CHILDREN[args.child](args)
    except BaseException as exc:
        oom = _is_memory_error(exc)
        traceback.print_exc()
        failed = {"ok": False, "oom": oom, "error": f"{type(exc).__name__}: {str(exc)[:300]}"}
        failed["client_hwm_mb"] = _status_mb("VmHWM")
        result_file.write_text(json.dumps(failed))
        return OOM_EXIT if oom else 1
    result.update(ok=True, client_hwm_mb=_status_mb("VmHWM"))
    result_file.write_text(json.dumps(result, default=str))
    return 0


# -- parent --------------------------------------------------------------------------------------

#: The child process running now (stopped with the parent on SIGTERM).
_RUNNING: dict[str, subprocess.Popen[bytes]] = {}


def _on_sigterm(signum: int, frame: Any) -> None:
    current = _RUNNING.get("child")
    if current is not None and current.poll() is None:
        current.terminate()  # the child closes its LocalCluster on SIGTERM
        try:
            current.wait(timeout=30)
        except subprocess.TimeoutExpired:
            current.kill()
    raise SystemExit(128 + signum)


def spawn(step: str, timeout: float | None, cap_gb: float | None = None, **options: Any) -> dict[str, Any]:
    """Run ``--child step`` and wait for it: its result, exit status, wall time and peak RSS (wait4)."""
    with tempfile.NamedTemporaryFile(prefix="bench-scale-", suffix=".json", delete=False) as handle:
        result_file = Path(handle.name)
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", step, "--result-file", str(result_file)]
    if cap_gb:
        cmd += ["--address-space-gb", str(cap_gb)]
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(":")}
    env.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "True")
    started = time.perf_counter()
    _RUNNING["child"] = proc = subprocess.Popen(cmd, env=env)
    timed_out = False
    deadline = None if timeout is None else started + timeout
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            timed_out = True
            proc.terminate()
            try:
                pid, status, usage = _wait4_timeout(proc.pid, 60)
            except TimeoutError:
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    _RUNNING.pop("child", None)
    wall = time.perf_counter() - started
    try:
        result = json.loads(result_file.read_text() or "{}")
    except (OSError, json.JSONDecodeError):
        result = {}
    result_file.unlink(missing_ok=True)
    # wait4's ru_maxrss is the larger of the child's own peak and that of its waited-for children (the
    # Dask workers): the child's own VmHWM, when it could report it, is the client's figure.
    result.update(exit_code=proc.returncode, process_wall_s=wall, wait4_maxrss_mb=usage.ru_maxrss / 1024)
    result["peak_rss_mb"] = result.get("client_hwm_mb", usage.ru_maxrss / 1024)
    result["wall_s"] = result.get("work_wall_s", wall)
    if timed_out:
        result.update(ok=False, error=f"timed out after {timeout:.0f} s")
    elif not result.get("ok"):
        result.setdefault("error", f"exit code {proc.returncode}")
        if proc.returncode in (-signal.SIGKILL, -signal.SIGABRT, OOM_EXIT):
            result.setdefault("oom", proc.returncode == OOM_EXIT)
    return result


def _wait4_timeout(pid: int, seconds: float) -> tuple[int, int, Any]:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        got = os.wait4(pid, os.WNOHANG)
        if got[0]:
            return got
        time.sleep(0.2)
    raise TimeoutError


def _activities(data: Path) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(data / "activities.parquet").metadata.num_rows


def ensure_plain(n: int, timeout: float | None) -> dict[str, Any]:
    data = Path(f"{CACHE_PREFIX}-{n}")
    marker = data / MARKER
    if marker.exists():
        info = json.loads(marker.read_text())
        info["cached"] = True
        return info
    print(f"[{_now()}] generating {n:,} leads into {data} ...", flush=True)
    result = spawn("generate", timeout, leads=n, data=data)
    if not result.get("ok"):
        raise SystemExit(f"generating {n:,} leads failed: {result.get('error')}")
    info = json.loads(marker.read_text())
    info.update(cached=False, generate_peak_rss_mb=result["peak_rss_mb"])
    print(f"[{_now()}] generated {n:,} leads, {info['activities']:,} activities in {info['generate_s']:.0f} s")
    return info


def ensure_partitioned(n: int, partitions: int, timeout: float | None) -> tuple[Path, float | None]:
    data = Path(f"{CACHE_PREFIX}-{n}-p{partitions}")
    if (data / "partitions.json").exists():
        return data, None
    print(f"[{_now()}] partitioning {n:,} leads into {partitions} partitions ({data}) ...", flush=True)
    result = spawn("partition", timeout, source=f"{CACHE_PREFIX}-{n}", data=data, partitions=partitions)
    if not result.get("ok"):
        raise SystemExit(f"partitioning {n:,} leads failed: {result.get('error')}")
    return data, result["partition_s"]


def ensure_model(train_leads: int, timeout: float | None) -> Path:
    model = Path(f"{CACHE_PREFIX}-model-{train_leads}.pkl")
    if model.exists():
        return model
    print(f"[{_now()}] training the scoring model on {train_leads:,} simulated leads (not measured) ...", flush=True)
    result = spawn("train", timeout, leads=train_leads, data=f"{CACHE_PREFIX}-train-{train_leads}", model=model)
    if not result.get("ok"):
        raise SystemExit(f"training failed: {result.get('error')}")
    print(f"[{_now()}] trained on {result['rows']:,} snapshot rows in {result['train_s']:.0f} s")
    return model


def _now() -> str:
    return datetime.now(UTC).strftime("%H:%M:%S")


def _verdict(result: dict[str, Any], cap_gb: float | None) -> str:
    if result.get("skipped"):
        return f"skipped ({result['skipped']})"
    if result.get("ok"):
        return "ok"
    if result.get("oom") and cap_gb:
        return f"OOM at the {cap_gb:g} GB cap"
    return f"error: {result.get('error', '?')}"


def _fmt_row(row: dict[str, Any]) -> str:
    mem = f"{row['peak_rss_mb'] / 1024:.2f}" if row.get("peak_rss_mb") is not None else "-"
    worker = f"{row['max_worker_peak_mb'] / 1024:.2f}" if row.get("max_worker_peak_mb") is not None else "-"
    wall = f"{row['wall_s']:.1f}" if row.get("wall_s") is not None else "-"
    per_m = f"{row['s_per_m_activities']:.1f}" if row.get("s_per_m_activities") is not None else "-"
    parts = f"{row['partitions']}x{row['rows_per_partition']:,}" if row.get("partitions") else "-"
    return (
        f"{row['size']:>9,} {row['activities']:>12,} {row['path']:<6} {row['step']:<8} {wall:>8} {per_m:>8} "
        f"{mem:>10} {worker:>10} {parts:>12}  {row['result']}"
    )


HEADER = (
    f"{'leads':>9} {'activities':>12} {'path':<6} {'step':<8} {'wall s':>8} {'s/M act':>8} "
    f"{'client GB':>10} {'worker GB':>10} {'partitions':>12}  result"
)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as the Markdown table of docs/scale-out.md."""

    def gb(value: float | None) -> str:
        return "-" if value is None else f"{value / 1024:.2f}"

    lines = [
        "| leads | activities | path | step | partitions x leads | wall s | s per M activities "
        "| peak RSS client GB | peak RSS max worker GB | result |",
        "|---:|---:|---|---|---:|---:|---:|---:|---:|---|",
    ]
    for row in rows:
        parts = f"{row['partitions']} x {row['rows_per_partition']:,}" if row.get("partitions") else "-"
        if row.get("ok"):
            wall = f"{row['wall_s']:.0f}"
        else:
            wall = f"({row['wall_s']:.0f} to failure)" if row.get("wall_s") is not None else "-"
        per_m = f"{row['s_per_m_activities']:.1f}" if row.get("s_per_m_activities") else "-"
        worker = gb(row.get("max_worker_peak_mb")) if row["path"] == "dask" else "-"
        lines.append(
            f"| {row['leads']:,} | {row['activities']:,} | {row['path']} | {row['step']} | {parts} | {wall} "
            f"| {per_m} | {gb(row.get('peak_rss_mb'))} | {worker} | {row['result']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,300000,1000000,2000000", help="leads per size, comma-separated")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-memory-limit", default="4GB", help="each Dask worker's memory limit")
    parser.add_argument("--partitions", type=int, help="partitions for every size (default: --rows-per-partition)")
    parser.add_argument("--rows-per-partition", type=int, default=50_000, help="leads per partition (default rule)")
    parser.add_argument(
        "--single-memory-limit", type=float, default=10.0, help="address-space cap (GB) of a single-machine child"
    )
    parser.add_argument("--skip-single", action="store_true", help="no single-machine steps")
    parser.add_argument("--skip-dask", action="store_true", help="no Dask steps")
    parser.add_argument("--skip-score", action="store_true", help="no scoring steps")
    parser.add_argument("--skip-features", action="store_true", help="no feature-build steps")
    parser.add_argument("--train-leads", type=int, default=20_000, help="simulated leads the scoring model learns on")
    parser.add_argument("--step-timeout", type=float, default=3600.0, help="seconds before a step is stopped")
    parser.add_argument("--deadline", help="UTC time HH:MM after which no step starts (and a running one stops)")
    parser.add_argument("--json", type=Path, default=Path("/tmp/bench_scale.json"))
    parser.add_argument("--render", nargs="+", type=Path, help="only print the Markdown table of these JSON results")
    parser.add_argument("--keep-outputs", action="store_true", help="keep feature tables and score stores")
    # internal: one step in a child process
    parser.add_argument("--child", choices=sorted(CHILDREN), help=argparse.SUPPRESS)
    parser.add_argument("--result-file", help=argparse.SUPPRESS)
    parser.add_argument("--address-space-gb", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--leads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return run_child(args)
    if args.render:
        print(markdown_table([row for path in args.render for row in json.loads(path.read_text())["rows"]]))
        return 0

    signal.signal(signal.SIGTERM, _on_sigterm)
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("MLFLOW_TRACKING_URI", "file:///tmp/leadscore-scale-mlruns")
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    deadline: float | None = None
    if args.deadline:
        hh, mm = (int(x) for x in args.deadline.split(":"))
        now = datetime.now(UTC)
        target = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        deadline = time.time() + (target - now).total_seconds()

    def timeout() -> float:
        left = args.step_timeout if deadline is None else min(args.step_timeout, deadline - time.time())
        return max(left, 0.0)

    meta = {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "mem_total_gb": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GB,
            "load_avg_at_start": os.getloadavg(),
        },
        "workers": args.workers,
        "worker_memory_limit": args.worker_memory_limit,
        "single_memory_limit_gb": args.single_memory_limit,
        "train_leads": args.train_leads,
        "snapshot_every_days": 7,
    }
    rows: list[dict[str, Any]] = []
    data_info: dict[int, Any] = {}

    def save() -> None:
        meta["load_avg_now"] = os.getloadavg()
        args.json.write_text(json.dumps({"meta": meta, "data": data_info, "rows": rows}, indent=2, default=str))

    model = None if args.skip_score else ensure_model(args.train_leads, None)
    dask_options = {"workers": args.workers, "worker_memory_limit": args.worker_memory_limit}
    out_root = Path(tempfile.mkdtemp(prefix="leadscore-scale-out-"))
    try:
        for n in sizes:
            if deadline is not None and time.time() >= deadline:
                print(f"[{_now()}] deadline reached: {n:,} leads not run", flush=True)
                break
            info = ensure_plain(n, None)
            plain = Path(f"{CACHE_PREFIX}-{n}")
            parts = args.partitions or max(args.workers, math.ceil(n / args.rows_per_partition))
            partitioned, partition_s = (None, None) if args.skip_dask else ensure_partitioned(n, parts, None)
            if partition_s is not None:
                info["partition_s"] = partition_s
            data_info[n] = info
            activities = int(info.get("activities") or _activities(plain))
            print(f"[{_now()}] {n:,} leads: {activities:,} activities ({activities / n:.1f} per lead)", flush=True)
            plan = []
            for step in ("features", "score"):
                if (step == "features" and args.skip_features) or (step == "score" and args.skip_score):
                    continue
                if not args.skip_single:
                    plan.append(("single", step))
                if not args.skip_dask:
                    plan.append(("dask", step))
            for path, step in plan:
                row: dict[str, Any] = {"size": n, "leads": n, "activities": activities, "path": path, "step": step}
                if path == "dask":
                    row.update(partitions=parts, rows_per_partition=math.ceil(n / parts))
                left = timeout()
                if left <= 0:
                    row.update(skipped="deadline", result="skipped (deadline)")
                    rows.append(row)
                    save()
                    continue
                out = out_root / f"{n}-{path}-{step}"
                if step == "score":
                    out.mkdir(parents=True, exist_ok=True)
                elif path == "single":
                    out = out.with_suffix(".parquet")
                print(f"[{_now()}] {n:,} leads: {path} {step} ...", flush=True)
                result = spawn(
                    f"{path}-{step}",
                    left,
                    args.single_memory_limit if path == "single" else None,
                    data=plain if path == "single" else partitioned,
                    out=out,
                    **({"model": model} if step == "score" else {}),
                    **(dask_options if path == "dask" else {}),
                )
                if not args.keep_outputs:
                    shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
                cap = args.single_memory_limit if path == "single" else None
                row.update(result)
                row["s_per_m_activities"] = row["wall_s"] / (activities / 1e6) if result.get("ok") else None
                row["result"] = _verdict(result, cap)
                rows.append(row)
                save()
                print(HEADER)
                print(_fmt_row(row), flush=True)
    finally:
        shutil.rmtree(out_root, ignore_errors=True)
        save()

    print()
    print(
        f"{os.cpu_count()} cores, single-machine cap {args.single_memory_limit:g} GB address space, "
        f"{args.workers} Dask workers x {args.worker_memory_limit}; wall s = the step's own time (Dask: without "
        "the cluster start, or the process' imports); client GB = the process' peak RSS; "
        "worker GB = the largest worker's peak RSS"
    )
    print(HEADER)
    for row in rows:
        print(_fmt_row(row))
    for n, info in data_info.items():
        gen = f"generated in {info['generate_s']:.0f} s" if "generate_s" in info else ""
        print(f"{n:>9,} leads: {info.get('activities', 0):,} activities {gen}")
    print()
    print(markdown_table(rows))
    print(f"\nJSON: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
