"""Open an HTML file in headless Chromium over the DevTools protocol: console errors, DOM checks,
screenshot. Used by the report tests and usable in CI (``python -m pipeline.quality.browser FILE``).

Needs a Chromium binary (Debian package ``chromium``: ``/usr/bin/chromium``) and the ``websockets``
package (a Prefect dependency). Nothing is fetched from the network: the page is a local file.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--hide-scrollbars", "--mute-audio",
)

PAGE_PROBE_JS = """(() => {
  const imgs = Array.from(document.images);
  const loaded = imgs.filter(i => i.complete && i.naturalWidth > 0 && i.naturalHeight > 0);
  const svgs = document.querySelectorAll('svg');
  return JSON.stringify({
    title: document.title,
    images: imgs.length,
    images_rendered: loaded.length,
    images_broken: imgs.length - loaded.length,
    svgs: svgs.length,
    sections: Array.from(document.querySelectorAll('section[id]')).map(s => s.id),
    links_internal: document.querySelectorAll('a[href^="#"]').length,
    links_dangling: Array.from(document.querySelectorAll('a[href^="#"]'))
        .filter(a => !document.getElementById(decodeURIComponent(a.getAttribute('href').slice(1)))).length,
    text_length: document.body ? document.body.innerText.length : 0,
    height: document.documentElement.scrollHeight,
  });
})()"""


def find_chromium() -> str | None:
    """Path of a Chromium/Chrome binary (``DYNASET_CHROMIUM`` overrides), or None."""
    env = os.environ.get("DYNASET_CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


@dataclass
class PageCheck:
    """What the browser saw."""

    console_errors: list[str] = field(default_factory=list)
    probe: dict[str, Any] = field(default_factory=dict)
    screenshot: Path | None = None
    load_seconds: float = 0.0


class _Cdp:
    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self.ws = connect(ws_url, max_size=None, open_timeout=20)
        self.next_id = 0
        self.events: list[dict] = []

    def call(self, method: str, params: dict | None = None, timeout: float = 60.0) -> dict:
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})
            self.events.append(msg)

    def wait_event(self, method: str, timeout: float = 60.0) -> dict:
        for i, e in enumerate(self.events):
            if e.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("method") == method:
                return msg
            self.events.append(msg)

    def drain(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                self.events.append(json.loads(self.ws.recv(timeout=max(0.05, deadline - time.monotonic()))))
            except TimeoutError:
                break

    def close(self) -> None:
        self.ws.close()


def _errors(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            out.append(f"exception: {d.get('text')} {d.get('exception', {}).get('description', '')}".strip())
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console.error: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            en = p["entry"]
            out.append(f"log ({en.get('source')}): {en.get('text')} {en.get('url', '')}".strip())
    return out


def check_page(
    html_path: str | Path, screenshot: str | Path | None = None, width: int = 1400, height: int = 3000,
    chromium: str | None = None, timeout: float = 90.0,
) -> PageCheck:
    """Load ``html_path`` in headless Chromium; collect console errors/exceptions/failed loads,
    evaluate ``PAGE_PROBE_JS`` and save a ``width`` × ``height`` PNG screenshot if asked."""
    chromium = chromium or find_chromium()
    if chromium is None:
        raise FileNotFoundError("no chromium binary found (apt-get install chromium)")
    url = Path(html_path).resolve().as_uri()
    profile = tempfile.mkdtemp(prefix="dynaset-chromium-")
    cmd = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--remote-debugging-port=0",
           f"--window-size={width},{height}", "about:blank"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    cdp = None
    try:
        ws_url = None
        deadline = time.monotonic() + timeout
        lines = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                if proc.poll() is not None:
                    break
                continue
            lines.append(line)
            m = re.search(r"DevTools listening on (ws://\S+)", line)
            if m:
                ws_url = m.group(1)
                break
        if ws_url is None:
            raise RuntimeError("chromium did not start its DevTools endpoint:\n" + "".join(lines[-20:]))
        browser = _Cdp(ws_url)
        target = browser.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        port = re.search(r":(\d+)/", ws_url).group(1)
        browser.close()
        cdp = _Cdp(f"ws://127.0.0.1:{port}/devtools/page/{target}")
        for dom in ("Runtime.enable", "Log.enable", "Page.enable"):
            cdp.call(dom)
        cdp.call("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        t0 = time.monotonic()
        cdp.call("Page.navigate", {"url": url})
        cdp.wait_event("Page.loadEventFired", timeout=timeout)
        result = PageCheck(load_seconds=time.monotonic() - t0)
        cdp.drain(0.5)
        res = cdp.call("Runtime.evaluate", {"expression": PAGE_PROBE_JS, "returnByValue": True})
        result.probe = json.loads(res["result"]["value"])
        if screenshot is not None:
            shot = cdp.call("Page.captureScreenshot", {"format": "png"})
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            result.screenshot = Path(screenshot)
        cdp.drain(0.2)
        result.console_errors = _errors(cdp.events)
        return result
    finally:
        if cdp is not None:
            try:
                cdp.close()
            except Exception:
                pass
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="check an HTML report in headless Chromium")
    ap.add_argument("html")
    ap.add_argument("--screenshot", default=None)
    args = ap.parse_args(argv)
    r = check_page(args.html, args.screenshot)
    print(json.dumps({"console_errors": r.console_errors, "probe": r.probe,
                      "screenshot": str(r.screenshot) if r.screenshot else None}, indent=2))
    return 1 if r.console_errors or r.probe.get("images_broken") else 0


if __name__ == "__main__":
    sys.exit(main())
