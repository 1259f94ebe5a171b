"""Every deployment of DEPLOYMENTS runs on a real Prefect server, picked up by a real process worker.

One ``prefect server start`` (loopback, free port, its own PREFECT_HOME and SQLite) for the module;
``leadscore deploy`` creates the deployments; each test triggers one deployment through the REST API with
its stored parameters, waits (bounded) for ``Completed`` and checks the output the flow left. Server,
worker and any flow-run process are stopped at the end, on failure too (process groups, then every
process still carrying this module's PREFECT_HOME).

A new row in DEPLOYMENTS is tested automatically; it needs an entry in ``OUTPUT_CHECKS`` (what the flow
leaves behind) and, when it needs another deployment's output first, one in ``RUN_AFTER``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipelines.deployments import DEPLOYMENTS, DeploymentSpec

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
SERVER_START_SECONDS = 180
RUN_SECONDS = 420  # one flow run, worker pick-up included (a busy shared 2-core machine)
SEED = 31  # not used by other tests
LEADS = 1500
# Fewer boosting rounds, no plots: the deployments store this config (leadscore deploy --config).
FAST_CONFIG = {
    "version": 1,
    "train": {
        "readiness": {"num_boost_round": 60, "early_stopping_rounds": 10},
        "stage": {"num_boost_round": 30, "early_stopping_rounds": 10},
        "baselines": {"hist_gradient_boosting": {"max_iter": 50}},
        "evaluation": {"plots": False},
    },
}

# Deployments whose output another one needs: score-batch scores with the champion train registers.
RUN_AFTER: dict[str, tuple[str, ...]] = {
    "score-batch": ("train",),
    "monitor": ("score-batch",),
    "report": ("score-batch",),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _stop_group(proc: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """SIGTERM the process group, then SIGKILL what is left after ``grace`` seconds."""
    if proc.poll() is not None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # stragglers of an exited leader
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    except ProcessLookupError:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)


def _pids_with_env(key: str, value: str) -> list[int]:
    """Processes whose environment has ``key=value`` (flow runs may start in their own session)."""
    needle = f"{key}={value}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env:
            found.append(int(entry.name))
    return found


@dataclass
class Stack:
    api: str
    env: dict[str, str]
    home: Path
    data: Path
    base: Path
    logs: dict[str, Path]
    done: dict[str, str] = field(default_factory=dict)  # key -> flow run id
    report_writes: set[int] = field(default_factory=set)  # modification times of the report file seen

    def log_tail(self, name: str, lines: int = 40) -> str:
        text = self.logs[name].read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.home / 'mlflow.db'}"

    @property
    def store_url(self) -> str:
        from serving.stores import default_store_url

        return default_store_url(self.home)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    from features.simulator import generate

    base = tmp_path_factory.mktemp("prefect-server")
    data, home, prefect_home = base / "data", base / "home", base / "prefect"
    generate(LEADS, SEED, data)
    port = _free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "LEADSCORE_", "MLFLOW_"))},
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_UI_ENABLED": "false",
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "LEADSCORE_HOME": str(home),
        "PREFECT_WORKER_QUERY_SECONDS": "1",  # pick triggered runs up at once
    }
    logs = {name: base / f"{name}.log" for name in ("server", "deploy", "worker")}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, *args: str) -> subprocess.Popen[bytes]:
        with logs[name].open("wb") as out:
            proc = subprocess.Popen(
                args, cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        procs.append(proc)
        return proc

    try:
        server = spawn("server", str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port))
        deadline = time.monotonic() + SERVER_START_SECONDS
        while True:
            assert server.poll() is None, "prefect server exited:\n" + logs["server"].read_text(errors="replace")
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "prefect server did not answer /health in time"
            time.sleep(0.5)
        config = base / "leadscore.yaml"
        config.write_text(yaml.safe_dump(FAST_CONFIG))
        deploy = spawn("deploy", str(BIN / "leadscore"), "deploy", "--data", str(data), "--config", str(config))
        assert deploy.wait(timeout=300) == 0, logs["deploy"].read_text(errors="replace")
        spawn("worker", str(BIN / "prefect"), "worker", "start", "--pool", "leadscore", "--limit", "1")
        yield Stack(api=api, env=env, home=home, data=data, base=base, logs=logs)
    finally:
        for proc in reversed(procs):  # worker first, then the server
            _stop_group(proc)
        for pid in _pids_with_env("PREFECT_HOME", str(prefect_home)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        left = _pids_with_env("PREFECT_HOME", str(prefect_home))
        assert not left, f"processes left running: {left}"


def _api(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """One API call; a 503 (the SQLite-backed server busy on a loaded machine) is retried for up to a minute."""
    deadline = time.monotonic() + 60
    while True:
        response = httpx.request(method, url, timeout=30, **kwargs)
        if response.status_code != 503 or time.monotonic() > deadline:
            return response
        time.sleep(1)


def _deployment(stack: Stack, spec: DeploymentSpec) -> dict[str, Any]:
    response = _api("GET", f"{stack.api}/deployments/name/{spec.key}/{spec.name}")
    assert response.status_code == 200, f"deployment {spec.full_name} not found: {response.text}"
    return dict(response.json())


def _run(stack: Stack, spec: DeploymentSpec) -> dict[str, Any]:
    """Trigger ``spec`` with its stored parameters and wait for a final state; the final flow run."""
    for before in RUN_AFTER.get(spec.key, ()):
        if before not in stack.done:
            _run(stack, next(s for s in DEPLOYMENTS if s.key == before))
    deployment = _deployment(stack, spec)
    created = _api("POST", f"{stack.api}/deployments/{deployment['id']}/create_flow_run", json={})
    assert created.status_code == 201, created.text
    run_id = created.json()["id"]
    deadline = time.monotonic() + RUN_SECONDS
    while True:
        run = _api("GET", f"{stack.api}/flow_runs/{run_id}").json()
        state = run["state"]
        if state["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        assert time.monotonic() < deadline, (
            f"{spec.full_name} still {state['type']} after {RUN_SECONDS} s; worker log:\n{stack.log_tail('worker')}"
        )
        time.sleep(1)
    assert state["type"] == "COMPLETED", f"{spec.full_name}: {state['message']}\n{stack.log_tail('worker')}"
    stack.done[spec.key] = run_id
    return dict(run)


def _assert_ran_at_batch_priority(stack: Stack, run_id: str) -> None:
    """The flow run lowered its CPU priority to the default LEADSCORE_BATCH_NICE (the stack's env has no
    LEADSCORE_* setting) and, as the process worker starts each run in a session of its own, its session's
    scheduler autogroup too (docs/operations.md section 8)."""
    response = _api(
        "POST", f"{stack.api}/logs/filter", json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200}
    )
    assert response.status_code == 200, response.text
    lines = [log["message"] for log in response.json() if log["message"].startswith("CPU priority:")]
    nice = max(os.nice(0), 10)  # the worker (and so its runs) starts at this test's nice value
    autogroups = Path("/proc/sys/kernel/sched_autogroup_enabled")
    group = "10" if autogroups.exists() and autogroups.read_text().strip() == "1" else "not lowered"
    assert len(lines) == 1 and lines[0].startswith(f"CPU priority: nice {nice}, scheduler autogroup {group}"), lines


def _model_versions(stack: Stack) -> int:
    from mlflow import MlflowClient

    if not (stack.home / "mlflow.db").exists():
        return 0
    return len(
        MlflowClient(stack.tracking_uri, registry_uri=stack.tracking_uri).search_model_versions("name='leadscore'")
    )


def _version_lineage(stack: Stack) -> list[tuple[str, str | None]]:
    """(model version, Prefect flow run id that trained it) for every registered version."""
    from mlflow import MlflowClient

    if not (stack.home / "mlflow.db").exists():
        return []
    from mlflow.exceptions import MlflowException

    client = MlflowClient(stack.tracking_uri, registry_uri=stack.tracking_uri)
    out: list[tuple[str, str | None]] = []
    for v in client.search_model_versions("name='leadscore'"):
        try:
            out.append((v.version, client.get_run(v.run_id).data.tags.get("leadscore.flow_run_id")))
        except MlflowException as exc:  # a version whose run is gone: say so instead of failing here
            out.append((v.version, f"run {v.run_id} not found ({exc.error_code}); source {v.source}"))
    return out


def _score_batches(stack: Stack) -> int:
    from serving.stores import ScoreStore

    if not any(stack.home.glob("leadscore.db*")) and stack.store_url.startswith("sqlite"):
        return 0
    store = ScoreStore(stack.store_url)
    try:
        return len(store.batches(limit=1000))
    finally:
        store.close()


def _monitor_results(stack: Stack) -> int:
    """Monitor results written (one JSON file per check besides ``latest.json``)."""
    folder = stack.home / "monitor"
    return len([p for p in folder.glob("*.json") if p.name != "latest.json"]) if folder.is_dir() else 0


def _reports(stack: Stack) -> int:
    """Reports written: the report file, counted once per distinct write (its modification time)."""
    path = stack.home / "report" / "report.html"
    if not path.is_file():
        return 0
    stack.report_writes.add(path.stat().st_mtime_ns)
    return len(stack.report_writes)


# What each deployment leaves behind: counted before and after its run.
OUTPUT_CHECKS: dict[str, Callable[[Stack], int]] = {
    "score-batch": _score_batches,
    "train": _model_versions,
    "monitor": _monitor_results,
    "report": _reports,
}


@pytest.mark.parametrize("spec", DEPLOYMENTS, ids=lambda s: s.key)
def test_deployment_runs_on_a_real_server(stack: Stack, spec: DeploymentSpec) -> None:
    assert spec.key in OUTPUT_CHECKS, f"add an output check for the new deployment '{spec.key}'"
    deployment = _deployment(stack, spec)
    assert deployment["entrypoint"] == spec.entrypoint
    assert deployment["work_pool_name"] == "leadscore"
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == [spec.cron]
    assert deployment["parameters"]["data_dir"] == str(stack.data.resolve())
    for before in RUN_AFTER.get(spec.key, ()):
        if before not in stack.done:
            _run(stack, next(s for s in DEPLOYMENTS if s.key == before))
    count = OUTPUT_CHECKS[spec.key]
    before_count = count(stack)
    run = _run(stack, spec)
    assert run["parameters"] == deployment["parameters"]
    after_count = count(stack)
    assert after_count == before_count + 1, (
        f"{spec.full_name} (flow run {run['id']}) completed but left {after_count - before_count} new outputs, "
        f"not 1; flow runs so far: {stack.done}; model versions: {_version_lineage(stack)}\n"
        f"worker log:\n{stack.log_tail('worker', 80)}"
    )
    _assert_ran_at_batch_priority(stack, run["id"])
    if spec.key == "train":  # the new version is this flow run's, not a stray one's
        assert [fr for _, fr in _version_lineage(stack)].count(run["id"]) == 1, _version_lineage(stack)
