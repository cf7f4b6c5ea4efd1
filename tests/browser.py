"""A headless Chromium for the report's browser tests (tests/test_report_browser.py), with the
network disabled, driven over the DevTools protocol on a pipe (no extra packages).

    python tests/browser.py     # print the browser found, or install one and say how it went

`make browser` (part of `make test`) runs this: it installs Debian's `chromium` with apt-get
when no browser is found, as root or through password-less sudo, and does nothing when a
browser is present or apt-get is not available (the tests then skip, saying why).
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

NAMES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Every request that is not loopback goes to a closed port: nothing is fetched from the network.
FLAGS = (
    "--headless=new",
    "--proxy-server=127.0.0.1:9",
    "--proxy-bypass-list=<-loopback>",
    "--use-angle=swiftshader",  # WebGL without a GPU (circuitsvis attention_patterns needs it)
    "--enable-unsafe-swiftshader",
    "--hide-scrollbars",
    "--mute-audio",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
)


def find_browser() -> str | None:
    """The path of a Chromium-family browser ($CHROMIUM first), or None."""
    given = os.environ.get("CHROMIUM")
    if given and shutil.which(given):
        return shutil.which(given)
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def install_browser() -> tuple[str | None, str]:
    """Find a browser, else install Debian's chromium with apt-get. Returns (path, why): why says
    what was done or why no browser could be had (one line)."""
    found = find_browser()
    if found:
        return found, f"found {found}"
    if shutil.which("apt-get") is None:
        return None, "no Chromium and no apt-get to install it with"
    if os.geteuid() == 0:
        sudo = []
    elif shutil.which("sudo") and subprocess.run(["sudo", "-n", "true"]).returncode == 0:
        sudo = ["sudo", "-n"]
    else:
        return None, "no Chromium, and apt-get needs root (no password-less sudo)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "chromium"]  # with its fonts (recommended)
    done = subprocess.run(install, env=env, capture_output=True, text=True)
    if done.returncode != 0:  # the package lists may be missing or stale: update, then retry
        subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, capture_output=True)
        done = subprocess.run(install, env=env, capture_output=True, text=True)
    found = find_browser()
    if found:
        return found, f"installed {found} with apt-get"
    tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
    return None, f"apt-get install chromium failed: {tail[0]}"


class Browser:
    """One headless browser process, spoken to over `--remote-debugging-pipe` (fd 3 in, fd 4
    out, NUL-terminated JSON). Records every network request the page makes (`requests`) and
    every script exception and console or browser error (`errors`, CSP refusals included).
    `javascript=False` turns scripts off."""

    def __init__(
        self,
        exe: str,
        width: int = 1280,
        height: int = 1000,
        timeout: float = 60,
        javascript: bool = True,
    ):
        self.timeout, self._id, self.events = timeout, 0, []
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.profile = tempfile.mkdtemp(prefix="inducthead-chromium-")
        to_browser, self._in = os.pipe()  # we write self._in; the browser reads fd 3
        self._out, from_browser = os.pipe()  # the browser writes fd 4; we read self._out
        flags = [*FLAGS, f"--window-size={width},{height}", "--remote-debugging-pipe"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium's sandbox refuses to run as root

        def wire():  # in the child, before exec: the pipe ends where Chromium expects them
            high = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser, from_browser)]
            os.dup2(high[0], 3)  # (via fds >= 10: either end may itself be fd 3 or 4)
            os.dup2(high[1], 4)

        self.proc = subprocess.Popen(
            [exe, *flags, "--user-data-dir=" + self.profile, "about:blank"],
            pass_fds=(3, 4),  # kept open by subprocess when it closes the rest after `wire`
            preexec_fn=wire,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_browser)
        os.close(from_browser)
        self._buf = b""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=self.session)
        if not javascript:
            self.send("Emulation.setScriptExecutionDisabled", {"value": True}, self.session)

    # ------------------------------------------------------------------ protocol
    def _read(self) -> dict:
        while b"\0" not in self._buf:
            chunk = os.read(self._out, 1 << 20)
            if not chunk:
                raise RuntimeError("the browser closed its DevTools pipe")
            self._buf += chunk
        message, self._buf = self._buf.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._id += 1
        message = {"id": self._id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._in, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._event(reply)

    def _event(self, message: dict) -> None:
        method, params = message.get("method"), message.get("params", {})
        self.events.append(method)
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            self.errors.append(details.get("exception", {}).get("description") or details["text"])
        elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
            self.errors.append(
                " ".join(str(a.get("value", a.get("description"))) for a in params["args"])
            )
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.errors.append(params["entry"]["text"])

    # ------------------------------------------------------------------ page
    def open(self, url: str) -> None:
        """Navigate and wait for the load event."""
        self.events.clear()
        self.send("Page.navigate", {"url": url}, self.session)
        deadline = time.monotonic() + self.timeout
        while "Page.loadEventFired" not in self.events:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{url} did not load in {self.timeout} s")
            self._event(self._read())

    def evaluate(self, expression: str):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            self.session,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float | None = None) -> bool:
        """Poll a JS expression until it is truthy (False if it never becomes so)."""
        deadline = time.monotonic() + (timeout or self.timeout)
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return True
            time.sleep(0.2)
        return False

    def rects(self, selector: str) -> list[dict]:
        """Page coordinates (x, y, width, height) of every element matching `selector`."""
        js = (
            f"[...document.querySelectorAll({json.dumps(selector)})].map(e => {{"
            "const r = e.getBoundingClientRect(); return {x: r.left + scrollX, "
            "y: r.top + scrollY, width: r.width, height: r.height}; })"
        )
        return self.evaluate(js)

    def screenshot(self) -> bytes:
        """PNG of the window as it is now."""
        return base64.b64decode(
            self.send("Page.captureScreenshot", {"format": "png"}, self.session)["data"]
        )

    def element_screenshots(self, selector: str, settle: float = 1.0) -> list[bytes]:
        """A PNG of each element matching `selector` (its top part, where it is taller than the
        window): scrolled into view and left `settle` seconds to draw, then clipped in page
        coordinates. (Capturing beyond the window would resize it, and views that draw to fit
        their width would be drawn anew while the picture is taken.)"""
        shots = []
        for i in range(len(self.rects(selector))):
            self.evaluate(
                f"document.querySelectorAll({json.dumps(selector)})[{i}]"
                ".scrollIntoView({block: 'start'})"
            )
            time.sleep(settle)
            r = self.rects(selector)[i]
            height = min(r["height"], self.evaluate("innerHeight"))
            clip = {"x": r["x"], "y": r["y"], "width": r["width"], "height": height, "scale": 1}
            params = {"format": "png", "clip": clip}
            data = self.send("Page.captureScreenshot", params, self.session)["data"]
            shots.append(base64.b64decode(data))
        return shots

    def close(self) -> None:
        with contextlib.suppress(RuntimeError, OSError):
            self.send("Browser.close")
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._in, self._out):
            os.close(fd)
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def pixel_std(png: bytes, inset: int = 3) -> float:
    """Standard deviation of the grey levels (0-255) of a PNG, `inset` pixels in from each edge
    (borders are not content): ~0 for a blank area."""
    import numpy as np
    from PIL import Image

    grey = np.asarray(Image.open(io.BytesIO(png)).convert("L"), dtype=float)
    inner = grey[inset : grey.shape[0] - inset, inset : grey.shape[1] - inset]
    return float(inner.std()) if inner.size else 0.0


def main() -> int:
    """Exit 0 whatever happened: without a browser the browser tests skip, giving this reason
    (an unreachable package registry must not fail `make test` before any test ran)."""
    _, why = install_browser()
    print(f"browser: {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
