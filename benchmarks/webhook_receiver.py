"""A fast webhook receiver for ``benchmarks/bench_webhooks.py``, run as its own process.

``python -m benchmarks.webhook_receiver PORT`` serves on 127.0.0.1:PORT (uvloop, aiohttp, TCP
no-delay): every ``POST /hook/<name>`` is answered 204 and recorded as ``[name, revision,
arrival time (Unix seconds)]``; ``GET /stats`` answers the records so far as JSON. It prints
``ready`` once listening and stops on SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import time

import uvloop
from aiohttp import web


def main() -> None:
    port = int(sys.argv[1])
    records: list[list[object]] = []

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.time()
        revision = json.loads(body)["data"]["revision"]
        records.append([request.match_info["name"], revision, arrived])
        return web.Response(status=204)

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(records)

    async def serve() -> None:
        app = web.Application()
        app.router.add_post("/hook/{name}", hook)
        app.router.add_get("/stats", stats)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port, backlog=1024).start()
        print("ready", flush=True)
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await runner.cleanup()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve())


if __name__ == "__main__":
    main()
