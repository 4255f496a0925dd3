"""The page's tests' tools: ``mescc serve`` as a process, and a small headless-Chromium
driver over the DevTools protocol.

:func:`serve` starts ``mescc serve`` on its own (output to a file), :func:`wait_until_served`
reads the address it prints (with its session token) and :func:`stop` ends it.

:class:`Browser` starts Debian's ``chromium`` with its own throw-away profile, talks to the page
target over a websocket (``websocket-client``), and offers what a person does: open a URL, wait
for something to appear, click an element (real mouse events at its centre), read text, take a
screenshot. The browser's own downloads are denied; nothing is fetched but the page.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import websocket

# -- mescc serve as a process --------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(args, *, cwd: Path) -> subprocess.Popen:
    """``mescc serve ARGS`` as its own process; its output goes to ``cwd/serve.log`` (a file,
    not a pipe: VTK's warnings would fill a pipe nobody reads and stall the server)."""
    log = open(cwd / "serve.log", "w")  # noqa: SIM115 - closed with the process in stop()
    process = subprocess.Popen(
        [sys.executable, "-m", "MESCCAnalyzerLib.cli", "serve", *args],
        cwd=cwd,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    process.log = log
    return process


def stop(process: subprocess.Popen) -> str:
    """Stop the server (terminate, then kill) and return what it printed."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
    process.log.close()
    return Path(process.log.name).read_text()


def wait_until_served(process: subprocess.Popen, port: int, *, timeout_s: float = 120.0) -> str:
    """The page's address as the server printed it (``http://127.0.0.1:PORT/?token=...``),
    once the page answers there."""
    pattern = re.compile(rf"^open (http://127\.0\.0\.1:{port}/\?token=[a-z0-9_-]+)$", re.M)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mescc serve exited ({process.returncode}):\n{stop(process)}")
        found = pattern.search(Path(process.log.name).read_text())
        if found:
            try:
                with urllib.request.urlopen(found[1], timeout=2) as r:
                    if r.status == 200:
                        return found[1]
            except OSError:
                pass
        time.sleep(0.2)
    raise RuntimeError(f"mescc serve did not answer on port {port} in {timeout_s} s")


# -- the browser ----------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-allow-origins=*",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


class BrowserError(RuntimeError):
    pass


class Browser:
    """One headless Chromium with one page; use as a context manager."""

    def __init__(self, *, width: int = 1600, height: int = 1000, timeout_s: float = 30.0):
        self.timeout_s = timeout_s
        if not Path(CHROMIUM).exists():
            raise RuntimeError(
                f"the browser tests need Debian's chromium ({CHROMIUM} is missing): "
                "run .ci/run, which installs it, or apt-get install chromium"
            )
        self.profile = Path(tempfile.mkdtemp(prefix="mescc_chromium."))
        self.process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={self.profile}", f"--window-size={width},{height}"]
            + ["about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._id = 0
        self.ws = None
        try:
            port = self._devtools_port()
            self.ws = websocket.create_connection(
                self._page_socket(port), timeout=timeout_s, suppress_origin=True
            )
            self.send("Page.enable")
            self.send("Runtime.enable")
            # The browser's own downloads are denied: the page's files are checked on disk.
            self.send("Page.setDownloadBehavior", behavior="deny")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except Exception:
            self.close()
            raise

    # -- plumbing ---------------------------------------------------------------------------------
    def _devtools_port(self) -> int:
        marker = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrowserError(f"chromium exited with status {self.process.returncode}")
            if marker.is_file():
                lines = marker.read_text().split()
                if lines:
                    return int(lines[0])
            time.sleep(0.05)
        raise BrowserError("chromium did not open its DevTools port")

    def _page_socket(self, port: int) -> str:
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                targets = json.loads(r.read())
            pages = [t for t in targets if t.get("type") == "page"]
            if pages:
                return pages[0]["webSocketDebuggerUrl"]
            time.sleep(0.05)
        raise BrowserError("chromium has no page target")

    def send(self, method: str, **params):
        self._id += 1
        self.ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        deadline = time.monotonic() + self.timeout_s
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv())
            if message.get("id") == self._id:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error']}")
                return message.get("result", {})
        raise BrowserError(f"{method}: no answer in {self.timeout_s} s")

    def close(self):
        if self.ws is not None:
            try:
                self.ws.close()
            except Exception:
                pass
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- what a person does ----------------------------------------------------------------------
    def open(self, url: str):
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression}: {result['exceptionDetails'].get('text')}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, *, timeout_s: float = 30.0, what: str = ""):
        """Poll a JavaScript expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout_s
        # A DOM node comes back by value as {}: count it as found.
        probe = f"(() => {{ const v = ({expression}); return v instanceof Node ? true : v; }})()"
        while True:
            value = self.evaluate(probe)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(
                    f"timed out after {timeout_s} s waiting for {what or expression}"
                )
            time.sleep(0.1)

    def rect(self, selector: str) -> dict:
        """The element's box in CSS pixels (scrolled into view first)."""
        value = self.evaluate(
            f"""(() => {{
                const e = document.querySelector({json.dumps(selector)});
                if (!e) return null;
                e.scrollIntoView({{block: 'center', inline: 'center'}});
                const r = e.getBoundingClientRect();
                return {{x: r.x, y: r.y, width: r.width, height: r.height}};
            }})()"""
        )
        if not value:
            raise BrowserError(f"no element {selector}")
        return value

    def click(self, selector: str):
        """A left click with real mouse events at the centre of the element."""
        r = self.rect(selector)
        x, y = r["x"] + r["width"] / 2, r["y"] + r["height"] / 2
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        for kind in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def click_text(self, selector: str, text: str, *, timeout_s: float = 10.0):
        """Click the first element matching ``selector`` whose text is ``text``."""
        mark = f"""(() => {{
            const e = Array.from(document.querySelectorAll({json.dumps(selector)}))
                .find(e => e.innerText.trim() === {json.dumps(text)});
            if (e) e.setAttribute('data-webdriver-target', '1');
            return !!e;
        }})()"""
        self.wait_for(mark, timeout_s=timeout_s, what=f"{selector} '{text}'")
        self.click("[data-webdriver-target='1']")
        self.evaluate(
            "document.querySelectorAll('[data-webdriver-target]')"
            ".forEach(e => e.removeAttribute('data-webdriver-target'))"
        )

    def drag(self, points: list[tuple[float, float]]):
        """Press the left button at the first point, move through the others, release."""
        x, y = points[0]
        self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y)
        self.send(
            "Input.dispatchMouseEvent", type="mousePressed", x=x, y=y, button="left", clickCount=1
        )
        for x, y in points[1:]:
            self.send("Input.dispatchMouseEvent", type="mouseMoved", x=x, y=y, button="left")
            time.sleep(0.03)
        self.send(
            "Input.dispatchMouseEvent", type="mouseReleased", x=x, y=y, button="left", clickCount=1
        )

    def text(self, selector: str) -> str:
        return self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).innerText || ''"
        )

    def screenshot(self, path: str | Path | None = None) -> bytes:
        data = base64.b64decode(self.send("Page.captureScreenshot", format="png")["data"])
        if path is not None:
            Path(path).write_bytes(data)
        return data
