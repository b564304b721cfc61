"""A real headless Chromium driven over the DevTools protocol, for checking the report pages.

Chromium runs with a fresh profile, no background networking, no component updates and a host resolver
that resolves nothing, so it cannot reach beyond loopback and file: URLs; the DevTools endpoint listens
on 127.0.0.1 only. ``inspect_page`` opens a page at a given width, collects console errors, facts about
the charts, text that overlaps other text, and saves a full-page screenshot.
"""

from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = Path("/usr/bin/chromium")  # Debian package "chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
WIDTHS = (1400, 420)  # a desktop window and a phone


class Cdp:
    """A minimal Chrome DevTools Protocol client over one page's websocket."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._next = 0
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self._event = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for msg in self._ws:
            if msg.type is not aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(msg.data)
            if "id" in data and data["id"] in self._pending:
                self._pending.pop(data["id"]).set_result(data)
            elif "method" in data:
                self.events.append(data)
                self._event.set()

    async def send(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        self._next += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = future
        await self._ws.send_json({"id": self._next, "method": method, "params": params or {}})
        reply = await asyncio.wait_for(future, 30)
        assert "error" not in reply, reply
        return reply["result"]  # type: ignore[no-any-return]

    async def wait_for_event(self, method: str, timeout: float) -> None:
        async with asyncio.timeout(timeout):
            while not any(e["method"] == method for e in self.events):
                self._event.clear()
                await self._event.wait()

    async def evaluate(self, expression: str) -> Any:
        result = await self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                      "awaitPromise": True})
        assert "exceptionDetails" not in result, result
        return result["result"]["value"]

    def errors(self) -> list[dict[str, Any]]:
        out = []
        for e in self.events:
            params = e.get("params", {})
            if (e["method"] == "Runtime.exceptionThrown"
                    or (e["method"] == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"))
                    or (e["method"] == "Log.entryAdded" and params.get("entry", {}).get("level") == "error")):
                out.append(e)
        return out

    async def close(self) -> None:
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


async def _devtools_port(profile: Path, proc: asyncio.subprocess.Process) -> int:
    """Chromium writes the port it picked for --remote-debugging-port=0 into DevToolsActivePort."""
    marker = profile / "DevToolsActivePort"
    async with asyncio.timeout(30):
        while not marker.exists() or not marker.read_text(encoding="utf-8").strip():
            assert proc.returncode is None, "chromium exited before opening its DevTools port"
            await asyncio.sleep(0.1)
    return int(marker.read_text(encoding="utf-8").splitlines()[0])


CHART_BOXES = """Array.from(document.querySelectorAll('svg.chart')).map(s => {
  const r = s.getBoundingClientRect();
  const marks = Array.from(s.querySelectorAll('rect, polyline, circle')).filter(b => {
    const box = b.getBBox(); return box.width > 0 || box.height > 0; }).length;
  return {id: s.id, width: r.width, height: r.height, marks: marks};
})"""

# Pairs of rendered text boxes that intersect: SVG text within each chart, and the text-bearing HTML
# elements (table cells, headings, paragraphs, captions) whose boxes overlap a sibling's or that overflow
# their own box horizontally without a scrolling container.
OVERLAPS = """(() => {
  const hit = (a, b) => a.left < b.right - 0.5 && b.left < a.right - 0.5 && a.top < b.bottom - 0.5
                        && b.top < a.bottom - 0.5;
  const out = [];
  document.querySelectorAll('svg.chart').forEach(svg => {
    const texts = Array.from(svg.querySelectorAll('text')).filter(t => t.textContent.trim());
    const boxes = texts.map(t => t.getBoundingClientRect());
    for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++)
      if (hit(boxes[i], boxes[j])) out.push(svg.id + ': ' + texts[i].textContent + ' / ' + texts[j].textContent);
  });
  document.querySelectorAll('tr').forEach(tr => {
    const cells = Array.from(tr.children).filter(c => c.offsetParent !== null);
    const boxes = cells.map(c => c.getBoundingClientRect());
    for (let i = 0; i + 1 < boxes.length; i++)
      if (hit(boxes[i], boxes[i + 1])) out.push('cells: ' + cells[i].textContent + ' / ' + cells[i + 1].textContent);
  });
  document.querySelectorAll('td, th, caption').forEach(c => {
    if (c.offsetParent !== null && c.scrollWidth > c.clientWidth + 1 && getComputedStyle(c).overflowX === 'visible')
      out.push('text overflows its cell: ' + c.textContent.slice(0, 60));
  });
  const page = document.documentElement.clientWidth;
  const scrolls = e => {  // inside a box that scrolls sideways: reachable, not cut off or overlapping
    for (let a = e.parentElement; a; a = a.parentElement)
      if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) return true;
    return false;
  };
  document.querySelectorAll('h1, h2, h3, p, caption, li, dt, dd, header, nav').forEach(e => {
    const r = e.getBoundingClientRect();
    if (e.offsetParent !== null && r.right > page + 1 && !scrolls(e))
      out.push('overflows the page: ' + e.tagName + ' ' + e.textContent.slice(0, 60));
  });
  return out;
})()"""


async def _upload(cdp: Cdp, selector: str, path: Path) -> None:
    """Pick ``path`` in the file input ``selector``, as a reader would (Chromium fires its change event)."""
    root = await cdp.send("DOM.getDocument")
    node = await cdp.send("DOM.querySelector", {"nodeId": root["root"]["nodeId"], "selector": selector})
    await cdp.send("DOM.setFileInputFiles", {"files": [str(path)], "nodeId": node["nodeId"]})
    await asyncio.sleep(0.5)  # the page reads the file asynchronously


async def _check_page(
    cdp: Cdp, url: str, screenshot: Path, width: int, script: str | None, upload: tuple[str, Path] | None,
) -> dict[str, Any]:
    for domain in ("Runtime", "Log", "Page", "DOM"):
        await cdp.send(f"{domain}.enable")
    await cdp.send("Emulation.setDeviceMetricsOverride",
                   {"width": width, "height": 1000, "deviceScaleFactor": 1, "mobile": width < 600})
    await cdp.send("Page.navigate", {"url": url})
    await cdp.wait_for_event("Page.loadEventFired", 30)
    await asyncio.sleep(0.5)  # late console messages (CSP reports, layout) arrive after the load event
    facts = {
        "rects": await cdp.evaluate("document.querySelectorAll('svg rect').length"),
        "charts": await cdp.evaluate(CHART_BOXES),
        "tables": await cdp.evaluate("document.querySelectorAll('table').length"),
        "title": await cdp.evaluate("document.title"),
        "resources": await cdp.evaluate("performance.getEntriesByType('resource').length"),
        "overlaps": await cdp.evaluate(OVERLAPS),
        "scroll_width": await cdp.evaluate("document.documentElement.scrollWidth"),
        "client_width": await cdp.evaluate("document.documentElement.clientWidth"),
    }
    if upload is not None:
        await _upload(cdp, *upload)
    if script is not None:
        facts["script"] = await cdp.evaluate(script)
    metrics = await cdp.send("Page.getLayoutMetrics")
    size = metrics["cssContentSize"]
    shot = await cdp.send("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1},
    })
    await asyncio.to_thread(screenshot.parent.mkdir, parents=True, exist_ok=True)
    await asyncio.to_thread(screenshot.write_bytes, base64.b64decode(shot["data"]))
    facts["errors"] = cdp.errors()
    return facts


async def inspect_page(
    url: str, screenshot: Path, width: int = 1280, script: str | None = None, upload: tuple[str, Path] | None = None,
) -> dict[str, Any]:
    """Open ``url`` at ``width`` CSS pixels; return facts (and ``script``'s value, run after picking the file of
    ``upload`` = (selector of a file input, path)), save a screenshot."""
    profile = Path(tempfile.mkdtemp(prefix="report-chromium-"))
    log = (profile.parent / f"{profile.name}.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", f"--window-size={width},1000",
        "about:blank", stdout=subprocess.DEVNULL, stderr=log,
    )
    try:
        port = await _devtools_port(profile, proc)
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/json/list") as resp:
                targets = await resp.json()
            page = next(t for t in targets if t["type"] == "page")
            async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                cdp = Cdp(ws)
                try:
                    return await _check_page(cdp, url, screenshot, width, script, upload)
                finally:
                    await cdp.close()
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        log.close()
        await asyncio.to_thread(shutil.rmtree, profile, True)
        await asyncio.to_thread(Path(log.name).unlink, True)
