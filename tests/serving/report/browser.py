"""A headless Chromium driven over the Chrome DevTools Protocol (test helper, no browser download).

Uses Debian's ``/usr/bin/chromium`` and the ``websockets`` package's synchronous client. The browser runs
in its own process group with networking disabled (an unreachable proxy, every host name unresolvable,
and the page's network emulated offline) and is killed as a group by :meth:`Chromium.close`.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")


def find_chromium() -> str | None:
    override = os.environ.get("LEADSCORE_CHROMIUM")
    if override:
        return override
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


@dataclass
class PageLoad:
    """What happened while a page loaded."""

    url: str
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL the page asked for (the page itself included)
    failed: list[str] = field(default_factory=list)


class Chromium:
    """One headless browser; use as a context manager so it is always killed."""

    def __init__(self, work_dir: Path, *, timeout: float = 30.0, width: int = 1100, height: int = 900) -> None:
        binary = find_chromium()
        if binary is None:
            raise RuntimeError("no Chromium found: apt-get install -y chromium (or set LEADSCORE_CHROMIUM)")
        self.timeout = timeout
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self._events: list[dict[str, Any]] = []
        profile = work_dir / "chromium-profile"
        profile.mkdir(parents=True, exist_ok=True)
        self._log = (work_dir / "chromium.log").open("wb")
        args = [
            binary,
            "--headless=new",
            "--no-sandbox",  # tests run as root in CI containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--metrics-recording-only",
            "--proxy-server=http://127.0.0.1:9",  # nothing listens there: any request that escapes fails
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            "--remote-debugging-address=127.0.0.1",
            "--remote-debugging-port=0",
            f"--window-size={width},{height}",
            "about:blank",
        ]
        self._proc = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )
        try:
            self._ws = self._connect(profile / "DevToolsActivePort")
        except BaseException:
            self.close()
            raise

    def _connect(self, port_file: Path) -> Any:
        from websockets.sync.client import connect

        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._proc.returncode} before accepting connections")
            if port_file.exists():
                lines = port_file.read_text().split()
                if len(lines) >= 2:
                    return connect(f"ws://127.0.0.1:{lines[0]}{lines[1]}", max_size=None, open_timeout=self.timeout)
            time.sleep(0.05)
        raise TimeoutError(f"chromium did not open its DevTools port within {self.timeout} s")

    # -- protocol ------------------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None) -> dict[str, Any]:
        message: dict[str, Any] = {"id": next(self._ids), "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._receive(deadline)
            if reply.get("id") == message["id"]:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._events.append(reply)

    def _receive(self, deadline: float) -> dict[str, Any]:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no answer from chromium in time")
        data: dict[str, Any] = json.loads(self._ws.recv(timeout=remaining))
        return data

    def _wait_for(self, method: str, session: str) -> None:
        deadline = time.monotonic() + self.timeout
        while not any(e.get("method") == method and e.get("sessionId") == session for e in self._events):
            self._events.append(self._receive(deadline))

    # -- pages ---------------------------------------------------------------------------------
    def open(self, url: str) -> tuple[str, PageLoad]:
        """Open ``url`` offline in a new tab; returns (session id, what happened while it loaded)."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        self.send(
            "Network.emulateNetworkConditions",
            {"offline": True, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
            session=session,
        )
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": self.width, "height": self.height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self._events.clear()
        self.send("Page.navigate", {"url": url}, session=session)
        self._wait_for("Page.loadEventFired", session)
        time.sleep(0.2)  # late console messages
        self.send("Runtime.evaluate", {"expression": "1"}, session=session)  # flush queued events
        return session, self._page_load(url, session)

    def _page_load(self, url: str, session: str) -> PageLoad:
        load = PageLoad(url)
        for event in self._events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                load.console_errors.append(" ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                load.console_errors.append(json.dumps(params.get("exceptionDetails", {}))[:500])
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                load.console_errors.append(params["entry"].get("text", ""))
            elif method == "Network.requestWillBeSent":
                load.requests.append(params["request"]["url"])
            elif method == "Network.loadingFailed":
                load.failed.append(f"{params.get('errorText')} ({params.get('requestId')})")
        return load

    def evaluate(self, session: str, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"script failed: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, session: str, path: Path) -> Path:
        """A PNG of the whole page (not just the viewport)."""
        metrics = self.send("Page.getLayoutMetrics", session=session)
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        shot = self.send(
            "Page.captureScreenshot",
            {
                "format": "png",
                "captureBeyondViewport": True,
                "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
            },
            session=session,
        )
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    # -- lifetime ------------------------------------------------------------------------------
    def close(self) -> None:
        try:
            ws = getattr(self, "_ws", None)
            if ws is not None:
                ws.close()
        finally:
            # the whole group: chromium's zygote and renderers too, even if the main process already exited
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            try:
                self._proc.wait(timeout=10)
            finally:
                self._log.close()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
