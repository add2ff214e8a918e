"""Headless Chromium screenshots of pages, driven over the DevTools protocol (aiohttp, an MLflow dependency):
each page is loaded, given time to fetch its data, cleared of MLflow's assistant panel, and captured at
1600x1000, then reduced to a 256-colour palette (PNG under 400 KB).

    python docs/images/screenshots.py OUT_DIR NAME=URL[@@TEXT] ...     (take_screenshots.sh calls it)

With @@TEXT the page is captured once TEXT shows on it (a table whose rows load late), else after SETTLE_S.
"""

from __future__ import annotations

import asyncio
import base64
import io
import itertools
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp
from PIL import Image

WIDTH, HEIGHT = 1600, 1000
SETTLE_S = 8  # a single-page app fetches its data after the page has loaded
WAIT_S = 90  # the longest wait for a page's TEXT
CLOSE_ASSISTANT = (
    "document.querySelector('[data-component-id=\"mlflow.assistant.chat_panel.close\"]')?.click();"
    "document.querySelectorAll('button[aria-label=\"Close\"]').forEach(b => b.click());"
)


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids = ws, itertools.count(1)

    async def call(self, method: str, **params) -> dict:
        number = next(self.ids)
        await self.ws.send_json({"id": number, "method": method, "params": params})
        async for message in self.ws:
            reply = json.loads(message.data)
            if reply.get("id") == number:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
        raise RuntimeError("the browser closed the connection")

    async def text(self) -> str:
        result = await self.call("Runtime.evaluate", expression="document.body ? document.body.innerText : ''")
        return result.get("result", {}).get("value", "")

    async def shot(self, url: str, path: Path, wait_for: str = "") -> None:
        await self.call("Page.navigate", url=url)
        await asyncio.sleep(SETTLE_S)
        deadline = time.monotonic() + WAIT_S
        while wait_for and wait_for not in await self.text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url}: {wait_for!r} did not show within {WAIT_S} s")
            await asyncio.sleep(1)
        await self.call("Runtime.evaluate", expression=CLOSE_ASSISTANT)
        await asyncio.sleep(1)
        png = base64.b64decode((await self.call("Page.captureScreenshot", format="png"))["data"])
        Image.open(io.BytesIO(png)).convert("RGB").quantize(256).save(path, optimize=True)
        print(f"{path} ({path.stat().st_size // 1024} KB) <- {url}")


async def take(shots: list[tuple[str, str]], out: Path, port: int) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://127.0.0.1:{port}/json/list") as reply:
            target = next(t for t in await reply.json() if t["type"] == "page")
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride", width=WIDTH, height=HEIGHT, deviceScaleFactor=1, mobile=False
            )
            for name, url in shots:
                url, _, wait_for = url.partition("@@")
                await page.shot(url, out / f"{name}.png", wait_for)


def main() -> None:
    out = Path(sys.argv[1])
    shots = [tuple(arg.split("=", 1)) for arg in sys.argv[2:]]
    with tempfile.TemporaryDirectory() as profile:
        browser = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             "--remote-debugging-port=0", f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
             "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(100):
                if port_file.is_file() and port_file.read_text().strip():
                    break
                time.sleep(0.1)
            asyncio.run(take(shots, out, int(port_file.read_text().split()[0])))
        finally:
            browser.terminate()
            browser.wait(timeout=30)


if __name__ == "__main__":
    main()
