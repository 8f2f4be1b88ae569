"""Webhooks: commit -> delivered latency, and what a blackholed receiver costs the writers.

**Latency** (target p50 <= 50 ms, p99 <= 250 ms at 100 events/s and 10 subscriptions): a real
``reg central serve`` (the embedded default: a ``file://`` replica, litestream syncing every
second) with 10 subscriptions to ``version.register``, all pointing at one receiver process
(``benchmarks/webhook_receiver.py``: uvloop + aiohttp, one path per subscription). One client
registers versions at a fixed 100/s (each request sent on schedule, not after the previous
answer). A delivery's latency is its arrival at the receiver minus the event's ``at`` (the
write's transaction time, taken before the commit: the figure includes the commit). Side by
side, in the same run: the same events' arrival on an SSE stream (``/v1/events/stream``) read by
a thread of the harness, and the writers' own request latency (send -> acknowledged).

**Isolation** (target: registration throughput with one subscription blackholed within 10 % of
the same run without webhooks): ``benchmarks/bench_central_writes.py``'s load (32 concurrent
keep-alive clients registering as fast as central acknowledges) against two replicated centrals
that take turns: one with a subscription to every event whose receiver never completes a TCP
connect (``tests/receiver.py``'s ``Blackhole``: a listener with a full accept queue), one with no
webhook (the baseline). The table gives the median round of each.

``python -m benchmarks.bench_webhooks [--rate 100] [--seconds 20] [--subscriptions 10]
[--rounds 5] [--round-seconds 10] [--clients 32] [--only latency|isolation]`` prints Markdown.
Rounds alternate which central goes first.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks.bench_central_writes import _load
from modelreg.central.client import CentralClient
from tests.procs import CentralProc, free_port, read_lines, start_central, stop_process, wait_for
from tests.receiver import Blackhole

TARGET_P50_MS = 50.0
TARGET_P99_MS = 250.0
TARGET_RATIO = 0.9


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def _epoch(at: str) -> float:
    return datetime.fromisoformat(at.replace("Z", "+00:00")).timestamp()


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds ``pid`` used so far (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _central(root: Path, name: str) -> CentralProc:
    return start_central(
        root / name,
        f"file://{root / name / 'replica'}",
        extra_args=["--webhook-allow-private"],
        sync_interval=1.0,
        heartbeat_interval=2.0,
    )


class _StreamReader(threading.Thread):
    """Follows the SSE stream and timestamps each event's arrival (the side-by-side figure)."""

    def __init__(self, client: CentralClient, after: int) -> None:
        super().__init__(daemon=True)
        self.client, self.after = client, after
        self.arrivals: dict[int, float] = {}
        self.stop = threading.Event()

    def run(self) -> None:
        stream = self.client.follow_events(self.after, actions=["version.register"])
        for event in stream:
            self.arrivals[event["revision"]] = time.time()
            if self.stop.is_set():
                return


async def _paced(central: CentralProc, rate: float, seconds: float) -> list[tuple[int, float]]:
    """Registrations sent on a fixed schedule; (revision, request latency) of each."""
    headers = {"Authorization": f"Bearer {central.admin_token}"}
    acks: list[tuple[int, float]] = []
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(central.url, headers=headers, connector=connector) as http:

        async def one(n: int) -> None:
            body = {"artifact_uri": f"s3://bench/{n}", "sha256": f"{n:064x}", "run_id": f"r{n}"}
            started = time.perf_counter()
            async with http.post("/v1/models/bench/versions", json=body) as answer:
                record = await answer.json()
            assert answer.status == 201, record
            acks.append((int(record["revision"]), time.perf_counter() - started))

        loop = asyncio.get_running_loop()
        start = loop.time()
        tasks = []
        for n in range(int(rate * seconds)):
            await asyncio.sleep(max(0.0, start + n / rate - loop.time()))
            tasks.append(asyncio.create_task(one(n)))
        await asyncio.gather(*tasks)
    return acks


def latency(rate: float, seconds: float, subscriptions: int) -> list[str]:
    load = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="bench-webhooks-"))
    port = free_port()
    receiver = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.webhook_receiver", str(port)], stdout=subprocess.PIPE
    )
    central: CentralProc | None = None
    reader: _StreamReader | None = None
    try:
        assert receiver.stdout is not None
        assert read_lines(receiver.stdout, 1) == [b"ready"]
        central = _central(root, "latency")
        client = CentralClient(central.url, central.admin_token)
        client.create_model("bench")
        for i in range(subscriptions):
            client.create_webhook(f"http://127.0.0.1:{port}/hook/{i}", ["version.register"])
        start = client.health()["revision"]
        reader = _StreamReader(client, start)
        reader.start()
        cpu_before = (_cpu_s(central.pid), _cpu_s(receiver.pid), time.monotonic())
        acks = asyncio.run(_paced(central, rate, seconds))
        revisions = {revision for revision, _ in acks}
        expected = len(revisions) * subscriptions

        def stats() -> list[list[Any]]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/stats", timeout=10) as r:
                found: list[list[Any]] = json.loads(r.read())
                return found

        wait_for(lambda: len(stats()) >= expected, timeout=120, interval=0.5, what="deliveries")
        elapsed = time.monotonic() - cpu_before[2]
        cpu = [
            (_cpu_s(pid) - before) / elapsed
            for pid, before in zip((central.pid, receiver.pid), cpu_before, strict=False)
        ]
        wait_for(lambda: revisions <= set(reader.arrivals), timeout=60, what="the stream")
        records = stats()
        at: dict[int, float] = {}
        after = start
        while True:
            page = client.events(after, 1000, actions=["version.register"])
            at.update({e["revision"]: _epoch(e["at"]) for e in page["items"]})
            after = page["last_revision"]
            if not page["next_page_token"]:
                break
    finally:
        if reader is not None:
            reader.stop.set()
        if central is not None:
            central.stop()
        stop_process(receiver)
        if receiver.stdout is not None:
            receiver.stdout.close()
        shutil.rmtree(root, ignore_errors=True)
    delivered = [(name, rev, arrived) for name, rev, arrived in records if rev in revisions]
    pairs = {(name, rev) for name, rev, _ in delivered}
    ms = [(arrived - at[rev]) * 1000 for _, rev, arrived in delivered]
    stream_ms = [(reader.arrivals[rev] - at[rev]) * 1000 for rev in revisions]
    ack_ms = [s * 1000 for _, s in acks]
    p50, p99 = _percentile(ms, 0.5), _percentile(ms, 0.99)
    met = p50 <= TARGET_P50_MS and p99 <= TARGET_P99_MS and len(pairs) == expected
    return [
        f"{len(revisions)} registrations at {rate:g}/s for {seconds:g} s, {subscriptions} "
        "subscriptions (one receiver process); central, receiver and client share the machine.",
        "",
        "| what | count | p50 ms | p99 ms | max ms |",
        "|---|---|---|---|---|",
        f"| commit -> webhook delivered | {len(delivered)} ({len(pairs)} of {expected} distinct,"
        f" {len(delivered) - len(pairs)} repeats) | {p50:.1f} | {p99:.1f} |"
        f" {max(ms, default=float('nan')):.1f} |",
        f"| commit -> SSE stream (same run) | {len(stream_ms)} | {_percentile(stream_ms, 0.5):.1f}"
        f" | {_percentile(stream_ms, 0.99):.1f} | {max(stream_ms):.1f} |",
        f"| registration request -> acknowledged (same run) | {len(ack_ms)} |"
        f" {_percentile(ack_ms, 0.5):.1f} | {_percentile(ack_ms, 0.99):.1f} | {max(ack_ms):.1f} |",
        "",
        f"CPU while loaded: central (its litestream child aside) {cpu[0] * 100:.0f} % of one core,"
        f" the receiver {cpu[1] * 100:.0f} %; load average before the run {load:.2f}",
        f"target p50 <= {TARGET_P50_MS:g} ms, p99 <= {TARGET_P99_MS:g} ms, every delivery made: "
        f"{'met' if met else 'MISSED'}",
    ]


def isolation(rounds: int, seconds: float, clients: int) -> list[str]:
    root = Path(tempfile.mkdtemp(prefix="bench-webhooks-iso-"))
    kinds = ("blackholed", "none")
    rates: dict[str, list[float]] = {k: [] for k in kinds}
    acked = dict.fromkeys(kinds, 0)
    errors = dict.fromkeys(kinds, 0)
    counters = dict.fromkeys(kinds, 0)
    centrals: dict[str, CentralProc] = {}
    hole = Blackhole()
    try:
        assert hole.is_black(), "the blackhole answers connects"
        for kind in kinds:
            centrals[kind] = _central(root, kind)
        admin = CentralClient(centrals["blackholed"].url, centrals["blackholed"].admin_token)
        webhook = admin.create_webhook(hole.url(), ["*"])["id"]
        for n in range(rounds):
            for kind in kinds if n % 2 == 0 else kinds[::-1]:  # neither always goes first
                result = asyncio.run(
                    _load(centrals[kind], seconds, clients, counters[kind], n == 0, wait=False)
                )
                counters[kind] = result["next"]
                rates[kind].append(result["rate"])
                acked[kind] += result["acked"]
                errors[kind] += result["errors"]
        state = admin.get_webhook(webhook)["delivery"]
        still_black = hole.is_black()
    finally:
        for central in centrals.values():
            central.stop()
        hole.close()
        shutil.rmtree(root, ignore_errors=True)
    median = {k: statistics.median(rates[k]) for k in kinds}
    ratio = median["blackholed"] / median["none"]
    paired = statistics.median(
        b / n for b, n in zip(rates["blackholed"], rates["none"], strict=True)
    )
    labels = {
        "blackholed": "one webhook to a blackholed receiver",
        "none": "no webhook (baseline)",
    }
    lines = [
        f"{clients} concurrent clients, {rounds} interleaved rounds of {seconds:g} s per central "
        "(both replicated to a file:// replica, sync 1 s).",
        "",
        "| central | acknowledged | errors | registrations/s, median (rounds) |",
        "|---|---|---|---|",
    ]
    for kind in kinds:
        each = ", ".join(f"{r:.0f}" for r in rates[kind])
        lines.append(
            f"| {labels[kind]} | {acked[kind]} | {errors[kind]} | {median[kind]:.0f} ({each}) |"
        )
    retrying = state.get("retrying") or {}
    lines += [
        "",
        f"blackholed / baseline throughput: {ratio:.2f} (medians), {paired:.2f} (median of the "
        "rounds' ratios); the blackholed webhook ended "
        f"{state['state']}, its oldest event after {retrying.get('attempts', 0)} attempts, "
        f"backlog {state['backlog']} events; the receiver still blackholed: {still_black}",
        f"target ratio >= {TARGET_RATIO:g}: "
        f"{'met' if ratio >= TARGET_RATIO and not errors['blackholed'] else 'MISSED'}",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--subscriptions", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--round-seconds", type=float, default=10.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--only", choices=["latency", "isolation"], default=None)
    args = parser.parse_args()
    lines: list[str] = []
    if args.only in (None, "latency"):
        lines += ["**Commit -> delivered**", ""]
        lines += latency(args.rate, args.seconds, args.subscriptions)
    if args.only in (None, "isolation"):
        lines += ["", "**A blackholed receiver and the writers**", ""]
        lines += isolation(args.rounds, args.round_seconds, args.clients)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
