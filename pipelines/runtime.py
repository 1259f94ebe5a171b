"""Process-level defaults applied by the CLI before Prefect is imported.

Kept out of module import time on purpose: importing leadscore never changes the environment.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Prefect must never phone home (runs offline in CI) and should run locally without a server.
PREFECT_DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_CLI_PROMPT": "false",
    # The CLI prints its own summary and clear errors; Prefect's run logs stay in its API (UI).
    "PREFECT_LOGGING_LEVEL": "CRITICAL",
    "DO_NOT_TRACK": "true",
    # The first run on a new machine creates Prefect's database (migrations): measured 12 s on a quiet
    # machine, and over Prefect's 20 s default on a busy one ("Timed out while attempting to connect to
    # ephemeral Prefect API server").
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}
# LightGBM's OpenMP threads spin while waiting; on a shared 2-core machine that wastes the CPU the
# other thread needs (measured: 14 s vs 268 s for the same training under load).
OPENMP_DEFAULTS = {"OMP_WAIT_POLICY": "PASSIVE"}
MLFLOW_DEFAULTS = {
    # No telemetry or network look-ups from MLflow either.
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ASYNC_LOGGING": "false",
}


def apply_runtime_defaults() -> None:
    """Set offline-friendly defaults for Prefect and MLflow unless the user set them."""
    for key, value in {**PREFECT_DEFAULTS, **OPENMP_DEFAULTS, **MLFLOW_DEFAULTS}.items():
        os.environ.setdefault(key, value)


# --------------------------------------------------------------------------------------------
# CPU priority of batch work (issue 15): on a machine that also runs ``leadscore serve``, a training or a
# batch scoring takes every core it can, and the endpoint's p99 went from 7 ms alone to 560 ms next to
# them (2 cores, docs/benchmarks-contention.md). At a lower priority they still get every idle cycle.

_AUTOGROUP_ENABLED = Path("/proc/sys/kernel/sched_autogroup_enabled")
_SELF_AUTOGROUP = Path("/proc/self/autogroup")


@dataclass(frozen=True)
class CpuPriority:
    """What :func:`lower_cpu_priority` left this process at."""

    nice: int
    #: the scheduler autogroup's nice value when autogroups are on and this process leads its session
    #: (then it was lowered too); ``None`` otherwise
    autogroup_nice: int | None


def lower_cpu_priority(nice: int) -> CpuPriority:
    """Lower this process' CPU priority to at least ``nice`` (0-19; never raises it back).

    The children started after it (Prefect's temporary server, Dask's local workers, LightGBM's threads)
    inherit it. With the kernel's scheduler autogroups on (``sched_autogroup_enabled``, the default of
    desktop and many server kernels), a nice value only ranks a process within its session, so a process
    that leads its own session (a systemd service, a job started with ``setsid``, a Prefect flow run in a
    session of its own) also lowers its session's autogroup. Where this is not enough (a command started
    from a shell shares the shell's session), run the batch jobs under a lower cgroup CPU weight
    (systemd ``CPUWeight=``, Kubernetes CPU requests): see ``docs/operations.md``.

    Raises:
        ValueError: ``nice`` outside 0-19.
    """
    if not 0 <= nice <= 19:
        raise ValueError(f"CPU nice value {nice}: expected 0 (unchanged) to 19 (lowest priority)")
    current = os.nice(0)
    if nice > current:
        current = os.nice(nice - current)
    return CpuPriority(current, _lower_autogroup(nice))


def _lower_autogroup(nice: int) -> int | None:
    try:
        if _AUTOGROUP_ENABLED.read_text().strip() != "1" or os.getsid(0) != os.getpid():
            return None
        # "/autogroup-85 nice 0"; empty for a process in no autogroup (the root task group: init's session)
        group_nice = int(_SELF_AUTOGROUP.read_text().split()[-1])
        if nice > group_nice:
            _SELF_AUTOGROUP.write_text(str(nice))
            group_nice = nice
        return group_nice
    except (OSError, ValueError, IndexError):  # no /proc (not Linux), or a kernel without autogroups
        return None


# --------------------------------------------------------------------------------------------
# Process guards: no `leadscore` command leaves a process behind, on SIGTERM or SIGKILL.
#
# Prefect 3.9 starts its temporary ("ephemeral") API server with ``SubprocessASGIServer``: a child
# ``python -m uvicorn`` that is stopped by an ``atexit`` hook. SIGTERM's default action skips
# ``atexit`` and SIGKILL skips everything, so the server was left running under PID 1 (53 of them
# held 9.4 GB after a morning of fault tests). Two guards close both paths:
#
# * SIGTERM (and SIGHUP) raise ``SystemExit`` in the main thread, so ``finally`` blocks (temporary
#   files), Prefect's crash handling and ``atexit`` (the server's ``stop``) all run; a watchdog ends
#   the process if that clean-up has not finished within ``TERM_GRACE_SECONDS``.
# * The server child runs under :func:`_run_guarded_child`, which polls its parent: once the parent
#   is gone (SIGKILL, OOM killer) the child shuts uvicorn down, then exits hard.

TERM_GRACE_SECONDS = 8.0
PARENT_POLL_SECONDS = 0.5
_CHILD_SHUTDOWN_SECONDS = 3.0
_GUARD_FLAG = "_leadscore_guarded"


class _Terminated(SystemExit):
    """SystemExit raised by the SIGTERM/SIGHUP handler (exit status 128 + signal number)."""


def _stop_ephemeral_servers() -> None:
    server_module = sys.modules.get("prefect.server.api.server")
    if server_module is None:
        return
    for server in list(server_module.SubprocessASGIServer._instances.values()):
        process = server.server_process
        if process is not None and process.poll() is None:
            process.terminate()


_terminating = threading.Event()


def _on_termination_signal(signum: int, _frame: object) -> None:
    # A second signal while cleaning up does not interrupt the clean-up.
    if _terminating.is_set():
        return
    _terminating.set()

    def hard_exit() -> None:
        _stop_ephemeral_servers()
        os._exit(128 + signum)

    timer = threading.Timer(TERM_GRACE_SECONDS, hard_exit)
    timer.daemon = True
    timer.start()
    raise _Terminated(128 + signum)


def install_termination_handlers() -> None:
    """Turn SIGTERM/SIGHUP into ``SystemExit`` so clean-up runs (main thread only; else a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for sig in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(sig) in (signal.SIG_DFL, None):
            signal.signal(sig, _on_termination_signal)


def guard_ephemeral_server() -> None:
    """Start Prefect's temporary API server so that it ends when this process ends, however it ends.

    Replaces ``SubprocessASGIServer._run_uvicorn_command`` (Prefect 3.9; the same command line and
    environment) with one that runs the server under a parent watchdog. Idempotent.
    """
    import subprocess

    import prefect
    from prefect.server.api import server as server_module
    from prefect.settings import get_current_settings

    cls = server_module.SubprocessASGIServer
    if getattr(cls, _GUARD_FLAG, False):
        return

    def run_uvicorn_command(self: Any) -> subprocess.Popen[Any]:
        server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        return subprocess.Popen(
            args=[
                sys.executable,
                "-m",
                "pipelines.runtime",
                str(os.getpid()),
                "--app-dir",
                str(prefect.__module_path__.parent),
                "--factory",
                "prefect.server.api.server:create_app",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "error",
                "--lifespan",
                "on",
            ],
            env={
                **os.environ,
                **server_env,
                **get_current_settings().to_environment_variables(exclude_unset=True),
            },
        )

    setattr(cls, "_run_uvicorn_command", run_uvicorn_command)  # noqa: B010 - replacing a method
    setattr(cls, _GUARD_FLAG, True)


def _watch_parent(parent_pid: int) -> None:
    """End this process once ``parent_pid`` is no longer its parent (the parent died)."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    # uvicorn shuts down gracefully on SIGTERM; exit hard if it has not within a few seconds.
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(_CHILD_SHUTDOWN_SECONDS)
    os._exit(1)


def _run_guarded_child(argv: list[str]) -> None:
    """``python -m pipelines.runtime PARENT_PID UVICORN_ARGS...``: uvicorn that dies with its parent."""
    parent_pid = int(argv[0])
    if os.getppid() != parent_pid:  # the parent died before we got here
        raise SystemExit(1)
    threading.Thread(target=_watch_parent, args=(parent_pid,), name="parent-watchdog", daemon=True).start()
    import runpy

    sys.argv = ["uvicorn", *argv[1:]]
    runpy.run_module("uvicorn", run_name="__main__", alter_sys=True)


if __name__ == "__main__":  # pragma: no cover - exercised by the process tests in a child process
    _run_guarded_child(sys.argv[1:])
