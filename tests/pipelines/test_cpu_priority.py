"""Batch commands and flow runs lower their CPU priority (LEADSCORE_BATCH_NICE); the endpoint keeps its own.

Each case runs in a child process: a nice value cannot be raised back, and this test process must keep its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

AUTOGROUPS = Path("/proc/sys/kernel/sched_autogroup_enabled")
BASE = os.nice(0)  # what children start at (0 unless the suite itself was started niced)


def at_least(nice: int) -> int:
    return max(BASE, nice)


def autogroups_on() -> bool:
    try:
        return AUTOGROUPS.read_text().strip() == "1"
    except OSError:
        return False


def own_autogroup_nice() -> int | None:
    """This process' autogroup nice value; ``None`` when it is in no autogroup (the file is then empty:
    CI's runner starts the suite from the init session, whose processes share the root task group)."""
    try:
        return int(Path("/proc/self/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return None


def child(code: str, *, new_session: bool, env: dict[str, str | None] | None = None) -> dict:
    """Run ``code`` (which prints one JSON line last) in a fresh interpreter (env ``None``: unset)."""
    merged = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        start_new_session=new_session,
        env={key: value for key, value in merged.items() if value is not None},
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


PROBE = """
    import json, os
    from pathlib import Path
    from pipelines.runtime import lower_cpu_priority

    def autogroup():
        try:  # "/autogroup-85 nice 0"; empty when the process is in no autogroup (the root task group)
            return int(Path("/proc/self/autogroup").read_text().split()[-1])
        except (OSError, ValueError, IndexError):
            return None

    first = lower_cpu_priority(5)
    again = lower_cpu_priority(3)  # never raised back
    try:
        lower_cpu_priority(20)
        refused = None
    except ValueError as exc:
        refused = str(exc)
    print(json.dumps({"first": [first.nice, first.autogroup_nice], "again": [again.nice, again.autogroup_nice],
                      "nice": os.nice(0), "autogroup": autogroup(), "refused": refused}))
"""


def test_a_session_leader_lowers_its_nice_value_and_its_autogroup() -> None:
    got = child(PROBE, new_session=True)
    assert got["nice"] == got["first"][0] == got["again"][0] == at_least(5)
    assert "expected 0 (unchanged) to 19" in got["refused"]
    if autogroups_on():
        assert got["first"][1] == got["again"][1] == got["autogroup"] >= 5
    else:
        assert got["first"][1] is None


def test_a_process_in_another_session_leaves_that_sessions_autogroup_alone() -> None:
    got = child(PROBE, new_session=False)
    assert got["nice"] == at_least(5) and got["first"][1] is None
    assert got["autogroup"] == own_autogroup_nice()  # the session's group (if any) kept its value


CLI = """
    import json, os, sys
    from typer.testing import CliRunner
    from pipelines.cli import app

    result = CliRunner().invoke(app, sys.argv[1:])
    print(json.dumps({"code": result.exit_code, "output": result.output, "nice": os.nice(0)}))
"""


def cli(args: list[str], env: dict[str, str | None]) -> dict:
    code = CLI.replace("sys.argv[1:]", repr(args))
    return child(code, new_session=True, env=env)


def test_batch_commands_run_at_leadscore_batch_nice_and_serve_keeps_its_priority(tmp_path: Path) -> None:
    env: dict[str, str | None] = {"LEADSCORE_HOME": str(tmp_path), "LEADSCORE_BATCH_NICE": "7"}
    env |= {"LEADSCORE_API_KEYS": None, "LEADSCORE_API_KEYS_FILE": None}
    validate = cli(["validate", "--data", str(tmp_path / "missing")], env)
    assert validate["code"] == 2 and validate["nice"] == at_least(7)  # lowered before the command ran (and failed)
    serve = cli(["serve", "--port", "1"], env)  # refuses to start without keys, after the callback ran
    assert serve["code"] == 2 and "LEADSCORE_API_KEYS" in serve["output"] and serve["nice"] == BASE
    default = cli(["validate", "--data", str(tmp_path / "missing")], {**env, "LEADSCORE_BATCH_NICE": None})
    assert default["code"] == 2 and default["nice"] == at_least(10)


@pytest.mark.parametrize("command", ["validate", "serve"])
@pytest.mark.parametrize("value", ["25", "-1", "low"])
def test_a_bad_leadscore_batch_nice_is_a_clear_error(tmp_path: Path, value: str, command: str) -> None:
    args = ["validate", "--data", str(tmp_path)] if command == "validate" else ["serve", "--port", "1"]
    got = cli(args, {"LEADSCORE_HOME": str(tmp_path), "LEADSCORE_BATCH_NICE": value, "LEADSCORE_API_KEYS": None})
    output = " ".join(got["output"].split())  # rich wraps long lines
    assert got["code"] == 2 and f"LEADSCORE_BATCH_NICE='{value}'" in output and "(0-19)" in output
    assert "Traceback" not in output and "errors.pydantic.dev" not in output
    assert got["nice"] == BASE


EARLY = """
    import json, sys
    import pipelines.runtime as runtime
    from typer.testing import CliRunner

    seen = {}
    lower = runtime.lower_cpu_priority
    HEAVY = ("pandas", "numpy", "scipy", "sklearn", "prefect", "mlflow")

    def spy(nice):
        seen["heavy"] = sorted(m for m in HEAVY if m in sys.modules)
        return lower(nice)

    runtime.lower_cpu_priority = spy
    from pipelines.cli import app

    result = CliRunner().invoke(app, sys.argv[1:])
    print(json.dumps({"code": result.exit_code, "heavy": seen.get("heavy")}))
"""


def test_a_batch_command_lowers_its_priority_before_importing_the_data_stack(tmp_path: Path) -> None:
    # Those imports cost a job 1.5 s of CPU; at full priority next to the endpoint they stalled it for up to
    # 4 s at every job start (docs/benchmarks-contention.md).
    code = EARLY.replace("sys.argv[1:]", repr(["validate", "--data", str(tmp_path / "missing")]))
    got = child(code, new_session=True, env={"LEADSCORE_HOME": str(tmp_path), "LEADSCORE_BATCH_NICE": "3"})
    assert got["code"] == 2 and got["heavy"] == []
