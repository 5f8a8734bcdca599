"""A small headless-Chromium driver over the Chrome DevTools Protocol, for tests of our pages.

It launches Chromium with a throw-away profile, attaches to its page target over a websocket,
and offers what a page test needs: load a URL at a viewport size (recording every request the
page makes), evaluate JavaScript, take a screenshot. Every wait has a deadline; nothing sleeps.

CDP is one websocket carrying command responses (with the command's `id`) and events (with a
`method`, no `id`), interleaved. Events that arrive while waiting for a response are queued, so
a later wait for an event (Page.loadEventFired) finds them instead of losing them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import queue
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections import deque
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from conftest import require_tool
from websockets.sync.client import connect

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--remote-debugging-port=0")


class CdpError(RuntimeError):
    """A CDP command answered with an error, or a page could not be loaded."""


def find_chromium() -> str:
    """The browser binary; missing fails under CI=true and skips elsewhere (require_tool)."""
    for name in CHROMIUM_NAMES:
        if path := shutil.which(name):
            return path
    return require_tool(CHROMIUM_NAMES[0])


class Browser:
    """One headless Chromium with one page. Use as a context manager, or call close()."""

    def __init__(self, binary: str | None = None, timeout: float = 20.0) -> None:
        self.timeout = timeout
        self.requests: list[str] = []  # every URL requested since the last load()
        self._events: deque[dict[str, Any]] = deque()
        self._next_id = 0
        self._stderr_tail: deque[str] = deque(maxlen=40)
        self._profile = tempfile.mkdtemp(prefix="cdp-profile-")
        self._proc = subprocess.Popen(
            [binary or find_chromium(), *FLAGS, f"--user-data-dir={self._profile}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            text=True, errors="replace",
            start_new_session=True,  # its own process group: close() kills its helpers too
        )
        self._ws: Any = None
        self._stack = contextlib.ExitStack()
        self._reader: threading.Thread | None = None
        try:
            # Chromium prints its endpoint on stderr; a thread keeps draining the pipe after
            # that, so a chatty browser never blocks on a full pipe.
            lines: queue.Queue[str | None] = queue.Queue()
            self._reader = threading.Thread(target=self._drain, args=(lines,), daemon=True)
            self._reader.start()
            port = self._devtools_port(lines, time.monotonic() + timeout)
            # Entered as a context manager: the one form every websockets release accepts
            # without a warning (17 deprecates using connect()'s return value directly).
            self._ws = self._stack.enter_context(connect(
                self._page_target(port, time.monotonic() + timeout), max_size=None,
                open_timeout=timeout))
        except BaseException:
            self.close()
            raise

    # --- start-up ------------------------------------------------------------------------------
    def _drain(self, lines: queue.Queue[str | None]) -> None:
        assert self._proc.stderr is not None
        for line in self._proc.stderr:
            self._stderr_tail.append(line.rstrip())
            lines.put(line)
        lines.put(None)  # EOF: the browser exited

    def _devtools_port(self, lines: queue.Queue[str | None], deadline: float) -> int:
        prefix = "DevTools listening on "
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"no DevTools endpoint within {self.timeout}s: {self._tail()}")
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise CdpError(f"chromium exited ({self._proc.poll()}): {self._tail()}")
            if line.startswith(prefix):
                port = urlsplit(line[len(prefix):].strip()).port
                if port is None:
                    raise CdpError(f"unexpected DevTools line: {line!r}")
                return port

    def _page_target(self, port: int, deadline: float) -> str:
        """The websocket URL of the about:blank page (it may take a moment to be listed)."""
        while True:
            targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return str(pages[0]["webSocketDebuggerUrl"])
            if time.monotonic() > deadline:
                raise CdpError(f"no page target listed: {targets}")
            time.sleep(0.02)  # polling an HTTP list under a deadline, not waiting for time

    def _tail(self) -> str:
        return " | ".join(self._stderr_tail) or "(no output)"

    # --- protocol ------------------------------------------------------------------------------
    def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run one CDP command and return its result; events seen meanwhile are queued."""
        self._next_id += 1
        msg_id = self._next_id
        self._ws.send(json.dumps({"id": msg_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + self.timeout
        while True:
            msg = self._receive(deadline, f"the answer to {method}")
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise CdpError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))
            # Any other message with an id would answer a command we no longer wait for.

    def wait_event(self, method: str, timeout: float | None = None) -> dict[str, Any]:
        """The params of the first `method` event, queued or still to come (with a deadline)."""
        for event in list(self._events):
            if event["method"] == method:
                self._events.remove(event)
                return dict(event.get("params", {}))
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            self._receive(deadline, f"event {method}")
            if self._events and self._events[-1]["method"] == method:
                return dict(self._events.pop().get("params", {}))

    def _receive(self, deadline: float, what: str) -> dict[str, Any]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out waiting for {what}")
        try:
            msg = json.loads(self._ws.recv(timeout=left))
        except TimeoutError:
            raise TimeoutError(f"timed out after {self.timeout}s waiting for {what}") from None
        if "method" in msg and "id" not in msg:
            if msg["method"] == "Network.requestWillBeSent":
                self.requests.append(msg["params"]["request"]["url"])
            self._events.append(msg)
        return dict(msg)

    # --- what tests use ------------------------------------------------------------------------
    def load(self, url: str, width: int = 1280, height: int = 900, mobile: bool = False,
             scale: float = 1.0) -> None:
        """Navigate at this viewport size and wait for the load event; `requests` then holds
        every URL the page requested (the document included)."""
        self.send("Network.enable")
        self.send("Page.enable")
        self.send("Emulation.setDeviceMetricsOverride", {
            "width": width, "height": height, "deviceScaleFactor": scale, "mobile": mobile})
        self.send("Emulation.setTouchEmulationEnabled", {"enabled": mobile})
        self._events.clear()
        self.requests = []
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {answer['errorText']}")
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (JSON-serialisable results only)."""
        answer = self.send("Runtime.evaluate", {
            "expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in answer:
            raise CdpError(f"JavaScript failed: {answer['exceptionDetails']}")
        return answer.get("result", {}).get("value")

    def screenshot(self, path: str | Path, full_page: bool = True) -> Path:
        """A PNG of the page (the whole document by default, not only the viewport)."""
        params: dict[str, Any] = {"format": "png"}
        if full_page:
            size = self.send("Page.getLayoutMetrics")["cssContentSize"]
            params.update(captureBeyondViewport=True, clip={
                "x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
        data = base64.b64decode(self.send("Page.captureScreenshot", params)["data"])
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def close(self) -> None:
        """Kill the browser and remove its profile; safe to call twice."""
        self._stack.close()  # closes the websocket, if it was opened
        self._ws = None
        # The group we created: the browser and the renderer/zygote children it started
        # (which may outlive a browser that already exited).
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._proc.pid, signal.SIGKILL)
        self._proc.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=5)  # EOF once every holder of the pipe is gone
        if self._proc.stderr is not None and (self._reader is None
                                              or not self._reader.is_alive()):
            self._proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
