"""report.html in a real browser: headless Chromium driven over the DevTools protocol (on a pipe, no port, no extra package).

Four checks on the sweep report (and the first, third and fourth on a run report): every
image decodes with a non-zero natural size; the claims table has exactly the rows of
claims.json; no request leaves the file (every request Chromium records is the file itself
or a data: URI); the screenshot is not blank. A control page with an external image shows
that the request recorder does catch a request that leaves the file.

Chromium comes from Debian's ``chromium`` package (``make browser``, run by ``make test``).
"""

from __future__ import annotations

import base64
import io
import json
import os
import queue
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_report import built_report

from posthoc_vq.io import read_json

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--remote-debugging-pipe",
         "--no-first-run", "--no-default-browser-check", "--disable-extensions", "--hide-scrollbars", "--mute-audio")
TIMEOUT = 60.0


def chromium_binary() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    pytest.skip("Chromium is not installed: run `make browser` (Debian package chromium)")


class Browser:
    """Chromium with ``--remote-debugging-pipe``: JSON messages ending in NUL on fds 3 (to the browser) and 4 (from it)."""

    def __init__(self, profile: Path):
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_fds():  # in the child: the browser reads fd 3 and writes fd 4
            r, w = os.dup(to_browser_r), os.dup(from_browser_w)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen([chromium_binary(), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     pass_fds=(3, 4), preexec_fn=wire_fds)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._inbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buf = b""
        with os.fdopen(self._from_browser, "rb", buffering=0) as f:
            while chunk := f.read(1 << 16):
                buf += chunk
                while b"\0" in buf:
                    msg, buf = buf.split(b"\0", 1)
                    self._inbox.put(json.loads(msg))
        self._inbox.put(None)

    def _pump(self, deadline: float) -> None:
        msg = self._inbox.get(timeout=max(0.01, deadline - time.time()))
        if msg is None:
            raise RuntimeError("Chromium closed the DevTools pipe")
        if "id" in msg:
            self._replies[msg["id"]] = msg
        else:
            self.events.append(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        msg = {"id": self._next_id, "method": method, "params": params or {}} | ({"sessionId": session} if session else {})
        os.write(self._to_browser, json.dumps(msg).encode() + b"\0")
        deadline = time.time() + TIMEOUT
        while self._next_id not in self._replies:
            self._pump(deadline)
        reply = self._replies.pop(self._next_id)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def wait_event(self, method: str, session: str) -> dict:
        deadline = time.time() + TIMEOUT
        while not any(e["method"] == method and e.get("sessionId") == session for e in self.events):
            self._pump(deadline)
        return next(e for e in self.events if e["method"] == method and e.get("sessionId") == session)

    def evaluate(self, expression: str, session: str):
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True}, session)
        if "exceptionDetails" in result:
            raise RuntimeError(f"page script failed: {result['exceptionDetails']}")
        return result["result"].get("value")  # undefined has no value

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (RuntimeError, queue.Empty, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_browser)


IMAGES_JS = """Promise.all([...document.images].map(img => img.decode().then(
  () => ({ok: true, w: img.naturalWidth, h: img.naturalHeight, src: img.src.slice(0, 22)}),
  e => ({ok: false, w: img.naturalWidth, h: img.naturalHeight, src: img.src.slice(0, 22), error: String(e)}))))"""
CLAIMS_JS = """(() => { const t = document.querySelector('table#claims'); if (!t) return null;
  const heads = [...t.querySelectorAll('thead th')].map(th => th.textContent.trim());
  return [...t.querySelectorAll('tbody tr')].map(tr => Object.fromEntries(
    [...tr.querySelectorAll('td')].map((td, i) => [heads[i], td.textContent.trim()]))); })()"""
LINKS_JS = "[...document.querySelectorAll('[src], [href]')].map(e => e.getAttribute('src') || e.getAttribute('href'))"


def open_page(html: Path, tmp_path: Path) -> dict:
    """Load ``html`` from disk; return its images, claims rows, links, every requested URL and a screenshot (PNG bytes)."""
    browser = Browser(tmp_path / "profile")
    try:
        target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Network", "Runtime"):
            browser.send(f"{domain}.enable", {}, session)
        browser.send("Emulation.setDeviceMetricsOverride", {"width": 1280, "height": 1600, "deviceScaleFactor": 1, "mobile": False}, session)
        url = html.resolve().as_uri()
        browser.send("Page.navigate", {"url": url}, session)
        browser.wait_event("Page.loadEventFired", session)
        page = {
            "url": url,
            "images": browser.evaluate(IMAGES_JS, session),
            "claims": browser.evaluate(CLAIMS_JS, session),
            "links": browser.evaluate(LINKS_JS, session),
            "screenshot": base64.b64decode(browser.send("Page.captureScreenshot", {"format": "png"}, session)["data"]),
        }
        browser.evaluate("new Promise(r => setTimeout(r, 300))", session)  # let late requests show up before counting
        page["requests"] = [e["params"]["request"]["url"] for e in browser.events
                            if e["method"] == "Network.requestWillBeSent" and e.get("sessionId") == session]
        return page
    finally:
        browser.close()


def outside_requests(page: dict) -> list[str]:
    return [u for u in page["requests"] if not (u.startswith("data:") or u == page["url"])]


def check_common(page: dict, n_figures: int) -> None:
    assert len(page["images"]) == n_figures >= 3
    for img in page["images"]:
        assert img["ok"] and img["w"] > 0 and img["h"] > 0, img
        assert img["src"].startswith("data:image/png;base64")
    assert page["url"] in page["requests"]  # the recorder saw the page itself
    assert outside_requests(page) == [], "the report made requests that leave the file"
    assert all(link.startswith(("data:", "#")) for link in page["links"]), page["links"]
    shot = np.asarray(Image.open(io.BytesIO(page["screenshot"])).convert("RGB"), dtype=np.float64)
    assert shot.shape[:2] == (1600, 1280)
    assert shot.var() > 100.0  # text, tables and figures: far from a single colour
    assert len(np.unique(shot.reshape(-1, 3), axis=0)) > 50


def test_sweep_report_in_chromium(tmp_path_factory):
    sweep, result = built_report(tmp_path_factory, "sweep")
    page = open_page(result["html"], tmp_path_factory.mktemp("chromium"))
    check_common(page, len(result["report"].figures))
    claims = read_json(sweep / "claims.json")["claims"]
    shown = page["claims"]
    assert shown is not None and len(shown) == len(claims) == 8
    for row, c in zip(shown, claims):
        assert (row["metric"], row["arm"], row["reference"], row["verdict"], row["reason"]) == (c["metric"], c["arm"], c["reference"], c["verdict"], c["reason"])
        assert row["slice"] == ", ".join(f"{k}={v}" for k, v in c["slice"].items())
        assert row["n"] == f"{c['n_arm']}/{c['n_reference']}"


def test_run_report_in_chromium(tmp_path_factory):
    _, result = built_report(tmp_path_factory, "run")
    page = open_page(result["html"], tmp_path_factory.mktemp("chromium"))
    check_common(page, len(result["report"].figures))
    assert page["claims"] is None  # a single run has no claims table, only limitations


def test_request_recorder_catches_a_request_that_leaves_the_file(tmp_path):
    """Control: the same recorder flags a page that loads an external image (the host does not resolve; the request is still made)."""
    html = tmp_path / "leaky.html"
    html.write_text('<!DOCTYPE html><html><body><h1>leaky</h1><img src="http://example.invalid/x.png"></body></html>')
    page = open_page(html, tmp_path)
    assert outside_requests(page) == ["http://example.invalid/x.png"]
    assert page["images"] and not page["images"][0]["ok"]
