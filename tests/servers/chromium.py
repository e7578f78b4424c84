"""Headless Chromium, driven through its DevTools protocol, for tests that open a page.

Debian's `chromium` (scripts/bootstrap.d/40-chromium.sh installs it; `AUDITLOCK_CHROMIUM`
names another binary). One browser per test session; each `open` gets a fresh tab, records
what the page did while it loaded and returns it:

    with Chromium.started(tmp_dir) as browser:
        page = browser.open(Path("report.html"), checks={"svgs": "document.images.length"})
        page.errors        # console errors, uncaught exceptions, CSP violations, failed loads
        page.requests      # every URL the page asked for (other than the page itself)
        page.checks        # the JavaScript expressions' values, evaluated after `load`
        page.screenshot    # PNG bytes of the whole page

The protocol is spoken over a websocket with aiohttp (already a dependency): commands go
to the tab's session (Target.attachToTarget, flatten), events are collected until the
page's load event and a short quiet period after it.

Fixture (registered in tests/conftest.py): `chromium`, session-scoped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.servers.managed import ManagedServer, log_tail

START_TIMEOUT = 30.0
PAGE_TIMEOUT = 30.0


@dataclass
class PageVisit:
    url: str
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)
    screenshot: bytes = b""
    pdf: bytes = b""  # with pdf=True: the page printed (print media, its own @page size)


def chromium_binary() -> str | None:
    explicit = os.environ.get("AUDITLOCK_CHROMIUM")
    if explicit:
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium(ManagedServer):
    label = "chromium"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self._proc = None
        self._ws_url = ""
        self._ids = itertools.count(1)

    @property
    def log_path(self) -> Path:
        return self.workdir / "chromium.log"

    def start(self) -> None:
        binary = chromium_binary()
        if binary is None:
            raise RuntimeError(
                "chromium not found: run scripts/bootstrap.d/40-chromium.sh "
                "(or set AUDITLOCK_CHROMIUM)"
            )
        profile = self.workdir / "profile"
        profile.mkdir(parents=True, exist_ok=True)
        port_file = profile / "DevToolsActivePort"
        port_file.unlink(missing_ok=True)
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            [
                binary,
                "--headless",
                "--no-sandbox",  # root in the test rig; the pages opened are our own files
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-extensions",
                "--disable-background-networking",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",  # the browser picks a free port, named below
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited at start:\n{log_tail(self.log_path)}")
            with contextlib.suppress(OSError, ValueError):
                port, path = port_file.read_text().split("\n")[:2]
                if port and path:
                    self._ws_url = f"ws://127.0.0.1:{int(port)}{path}"
                    return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"chromium did not open its DevTools port:\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def open(
        self,
        page: Path,
        *,
        checks: dict[str, str] | None = None,
        width: int = 1280,
        height: int = 900,
        print_media: bool = False,
        pdf: bool = False,
    ) -> PageVisit:
        """Load `page` in a new tab; see the module docstring."""
        return asyncio.run(self._visit(page.resolve().as_uri(), checks or {}, width, height,
                                       print_media, pdf))  # fmt: skip

    async def _visit(
        self, url: str, checks: dict[str, str], width: int, height: int, print_media: bool,
        pdf: bool,
    ) -> PageVisit:  # fmt: skip
        import aiohttp

        visit = PageVisit(url)
        async with (
            aiohttp.ClientSession() as http,
            http.ws_connect(self._ws_url, max_msg_size=256 * 1024 * 1024) as ws,
        ):
            session = _Session(ws, self._ids)
            reader = asyncio.create_task(session.read_forever())
            try:
                target = await session.call("Target.createTarget", url="about:blank")
                attached = await session.call(
                    "Target.attachToTarget", targetId=target["targetId"], flatten=True
                )
                session.session_id = attached["sessionId"]
                for domain in ("Page", "Runtime", "Log", "Network"):
                    await session.call(f"{domain}.enable")
                await session.call(
                    "Emulation.setDeviceMetricsOverride",
                    width=width, height=height, deviceScaleFactor=1, mobile=False,
                )  # fmt: skip
                if print_media:
                    await session.call("Emulation.setEmulatedMedia", media="print")
                loaded = session.expect("Page.loadEventFired")
                await session.call("Page.navigate", url=url)
                await asyncio.wait_for(loaded, PAGE_TIMEOUT)
                await asyncio.sleep(0.3)  # late console messages and requests
                for name, expression in checks.items():
                    result = await session.call(
                        "Runtime.evaluate", expression=expression, returnByValue=True
                    )
                    if "exceptionDetails" in result:
                        raise AssertionError(f"check {name!r} threw: {result['exceptionDetails']}")
                    visit.checks[name] = result["result"].get("value")
                shot = await session.call(
                    "Page.captureScreenshot", format="png", captureBeyondViewport=True
                )
                visit.screenshot = base64.b64decode(shot["data"])
                if pdf:
                    printed = await session.call(
                        "Page.printToPDF", printBackground=True, preferCSSPageSize=True
                    )
                    visit.pdf = base64.b64decode(printed["data"])
                session.session_id = None
                await session.call("Target.closeTarget", targetId=target["targetId"])
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        visit.errors = session.errors
        visit.requests = [u for u in session.requests if u != url]
        return visit


class _Session:
    """One websocket to the browser: numbered commands, their answers, and the events the
    tests care about (console and log errors, exceptions, requests)."""

    def __init__(self, ws: Any, ids: Iterator[int]) -> None:
        self.ws = ws
        self.ids = ids
        self.session_id: str | None = None
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.waiters: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self.errors: list[str] = []
        self.requests: list[str] = []

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params}
        if self.session_id is not None:
            message["sessionId"] = self.session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[number] = future
        await self.ws.send_json(message)
        return await asyncio.wait_for(future, PAGE_TIMEOUT)

    def expect(self, event: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiters[event] = future
        return future

    async def read_forever(self) -> None:
        async for raw in self.ws:
            message = raw.json()
            if "id" in message:
                future = self.pending.pop(message["id"], None)
                if future is not None and not future.done():
                    if "error" in message:
                        future.set_exception(RuntimeError(f"DevTools: {message['error']}"))
                    else:
                        future.set_result(message.get("result", {}))
                continue
            self._event(message.get("method", ""), message.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        waiter = self.waiters.pop(method, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(params)
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            args = [str(a.get("value", a.get("description", ""))) for a in params.get("args", [])]
            self.errors.append("console: " + " ".join(args))
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            text = details.get("exception", {}).get("description") or details.get("text")
            self.errors.append(f"exception: {text}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            entry = params["entry"]
            self.errors.append(f"log ({entry.get('source')}): {entry.get('text')}")
        elif method == "Network.requestWillBeSent":
            self.requests.append(params.get("request", {}).get("url", ""))
        elif method == "Network.loadingFailed":
            self.errors.append(f"load failed: {params.get('errorText')}")


@pytest.fixture(scope="session")
def chromium() -> Iterator[Chromium]:
    """One headless Chromium for the whole session (its start is the costly part)."""
    with (
        tempfile.TemporaryDirectory(prefix="auditlock-chromium-") as tmp,
        Chromium.started(Path(tmp)) as browser,
    ):
        yield browser
