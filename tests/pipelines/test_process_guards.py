"""No ``leadscore`` command leaves a process behind: SIGTERM and SIGKILL of a real command mid-run.

Processes are counted from /proc (Linux): the command's descendants while it runs, and afterwards
every process that was one of them or that is a guarded Prefect server started for it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from pipelines.cli import app

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="counts processes through /proc (Linux)"),
]
LEADSCORE = Path(sys.executable).with_name("leadscore")


def _ppid_map() -> dict[int, int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ...": comm may contain spaces, so split after the last ')'.
        fields = stat[stat.rindex(")") + 2 :].split()
        if fields[0] != "Z":  # zombies are already dead (only waiting to be reaped)
            parents[int(entry.name)] = int(fields[1])
    return parents


def _descendants(pid: int) -> set[int]:
    parents = _ppid_map()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        children = {child for child, parent in parents.items() if parent in frontier} - found
        found |= children
        frontier = children
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _guarded_servers_of(pid: int) -> set[int]:
    """Prefect servers started for ``pid`` (their command line carries the parent's pid)."""
    marker = f"pipelines.runtime {pid} "
    return {p for p in _ppid_map() if marker in _cmdline(p)}


def _alive(pids: set[int]) -> set[int]:
    live = _ppid_map()
    return {p for p in pids if p in live}


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sim") / "data"
    result = CliRunner().invoke(app, ["generate", "--leads", "3000", "--seed", "5", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def _start_features(sim_dir: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)  # the command must start its own temporary server
    return subprocess.Popen(
        [str(LEADSCORE), "features", "--data", str(sim_dir), "--out", str(tmp_path / "features.parquet")],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_server(proc: subprocess.Popen[bytes], timeout: float = 120.0) -> set[int]:
    """Wait until the command has started its Prefect server; return all its descendants then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the command ended before its Prefect server started"
        if _guarded_servers_of(proc.pid):
            time.sleep(1.0)  # let the server get going (migrations, listening socket)
            return _descendants(proc.pid)
        time.sleep(0.2)
    raise AssertionError("no Prefect server was started within the timeout")


def _wait_gone(pids: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while _alive(pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _alive(pids)


def test_sigterm_ends_the_command_and_its_prefect_server(sim_dir: Path, tmp_path: Path) -> None:
    proc = _start_features(sim_dir, tmp_path)
    try:
        children = _wait_for_server(proc)
        assert children, "expected at least the Prefect server as a child"
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        ended_after = time.monotonic() - started
        assert code != 0  # interrupted, not a success
        assert ended_after < 10.0
        left = _wait_gone(children | _guarded_servers_of(proc.pid), timeout=3.0)
        assert not left, f"processes left behind after SIGTERM: {[_cmdline(p) for p in left]}"
        assert not list(tmp_path.glob("*.tmp")) and not list(tmp_path.glob(".*.tmp"))
        assert not (tmp_path / "features.parquet").exists()  # no half-written output
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigkill_leaves_nothing_alive_for_more_than_a_few_seconds(sim_dir: Path, tmp_path: Path) -> None:
    proc = _start_features(sim_dir, tmp_path)
    children: set[int] = set()
    try:
        children = _wait_for_server(proc)
        servers = _guarded_servers_of(proc.pid)
        assert servers
        proc.kill()
        proc.wait(timeout=5)
        left = _wait_gone(children | servers, timeout=6.0)
        assert not left, f"processes outlived SIGKILL: {[_cmdline(p) for p in left]}"
    finally:
        for pid in _alive(children):
            os.kill(pid, signal.SIGKILL)
