"""A killed simulator or writer leaves no temporary files and no half-written outputs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from features.io import make_temporary, remove_stale_temporaries, write_table

LEADSCORE = Path(sys.executable).with_name("leadscore")


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_stale_temporaries_of_dead_writers_are_swept_live_ones_kept(tmp_path: Path) -> None:
    target = tmp_path / "leads.parquet"
    stale = tmp_path / f".leads.parquet.{_dead_pid()}.abc123.tmp"
    stale.write_bytes(b"half a file")
    mine = make_temporary(target)  # this process is alive: its temporary is kept
    other = tmp_path / f".other.parquet.{_dead_pid()}.x.tmp"  # another target: not ours to sweep
    other.write_bytes(b"x")
    assert not stale.exists()
    assert mine.exists() and other.exists()
    assert remove_stale_temporaries(target) == []
    mine.unlink()


def test_a_new_write_sweeps_what_a_killed_write_left(tmp_path: Path) -> None:
    target = tmp_path / "features.parquet"
    (tmp_path / f".features.parquet.{_dead_pid()}.q.tmp").write_bytes(b"partial")
    write_table(pd.DataFrame({"a": [1, 2]}), target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["features.parquet"]


def _start_generate(out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [str(LEADSCORE), "generate", "--leads", "400000", "--seed", "2", "--out", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _temporaries(root: Path) -> list[Path]:
    return sorted(root.rglob(".*.tmp"))


def _wait_for_temporaries(proc: subprocess.Popen[bytes], out: Path, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the simulator finished before it could be killed mid-write"
        if out.exists() and _temporaries(out):
            time.sleep(0.5)  # mid-write: chunks are being appended
            return
        time.sleep(0.05)
    raise AssertionError("the simulator never started writing")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_killed_simulator_leaves_no_partial_output_and_the_rerun_completes(tmp_path: Path, sig: int) -> None:
    out = tmp_path / "data"
    proc = _start_generate(out)
    try:
        _wait_for_temporaries(proc, out)
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=20) != 0
    finally:
        if proc.poll() is None:
            proc.kill()
    # No committed table, no contract: the directory is visibly incomplete, not silently half-written.
    visible = [p for p in out.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert visible == []
    if sig == signal.SIGTERM:
        assert _temporaries(out) == []  # cleaned up by the process itself
    rerun = subprocess.run(
        [str(LEADSCORE), "generate", "--leads", "300", "--seed", "2", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert _temporaries(out) == []  # what a SIGKILL left is swept by the next run
    assert len(pd.read_parquet(out / "leads.parquet")) == 300
    assert (out / "contract.yaml").exists()
