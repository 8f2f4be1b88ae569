"""Central's Prometheus metrics, rendered in the text exposition format (version 0.0.4).

No client library: a handful of counters and one histogram kept in dicts, rendered on scrape.
Series (``route`` is the route template, e.g. ``/v1/models/{model}``, or ``unmatched``):

* ``modelreg_central_requests_total{method, route, status}`` — answered requests.
* ``modelreg_central_request_duration_seconds{method, route}`` — latency histogram.
* ``modelreg_central_writes_total{method, route}`` — successful mutations (2xx non-GET).
* ``modelreg_central_revision`` — the registry revision at scrape time.
* ``modelreg_central_models`` / ``_versions`` / ``_aliases`` / ``_events`` — row counts.
* ``modelreg_central_uptime_seconds``.
* ``modelreg_central_webhook_attempts_total{outcome}``, ``_webhook_backlog{webhook}``,
  ``_webhook_retrying`` — webhook deliveries (``central/delivery.py``).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Mapping

from aiohttp import web

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS_S", "METRICS", "PREFIX", "Metrics", "escape_label"]

#: The ``Content-Type`` of the text exposition format.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Upper bounds of the latency histogram buckets, in seconds (``+Inf`` is implicit).
LATENCY_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: The prefix of every series name (webhook series: ``central/delivery.py``).
PREFIX = _PREFIX = "modelreg_central_"
_WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def escape_label(value: str) -> str:
    """A label value escaped as the text format requires (backslash, quote, newline)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(pairs: Mapping[str, str]) -> str:
    return "{" + ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs.items()) + "}"


def _number(value: float) -> str:
    return repr(float(value)) if not float(value).is_integer() else str(int(value))


class _Histogram:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.buckets = [0] * len(LATENCY_BUCKETS_S)  # per bucket, not cumulative
        self.count = 0
        self.sum = 0.0

    def observe(self, seconds: float) -> None:
        index = bisect.bisect_left(LATENCY_BUCKETS_S, seconds)
        if index < len(self.buckets):
            self.buckets[index] += 1
        self.count += 1
        self.sum += seconds


class Metrics:
    """Request counters and latencies of one central process. Not thread-safe: the event loop
    is the only writer."""

    def __init__(self) -> None:
        self._started = time.monotonic()
        self._requests: dict[tuple[str, str, int], int] = {}
        self._latency: dict[tuple[str, str], _Histogram] = {}
        self._writes: dict[tuple[str, str], int] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and its latency."""
        key = (method, route, status)
        self._requests[key] = self._requests.get(key, 0) + 1
        hist = self._latency.get((method, route))
        if hist is None:
            hist = self._latency[(method, route)] = _Histogram()
        hist.observe(seconds)
        if method in _WRITE_METHODS and 200 <= status < 300:
            self._writes[(method, route)] = self._writes.get((method, route), 0) + 1

    def requests(self, method: str, route: str, status: int) -> int:
        """How many requests of this kind were answered so far (for tests and status pages)."""
        return self._requests.get((method, route, status), 0)

    def render(self, revision: int, counts: Mapping[str, int]) -> str:
        """Every series in the text format; ``revision`` and ``counts`` are read at scrape time."""
        out: list[str] = []

        def header(name: str, kind: str, help_text: str) -> None:
            out.append(f"# HELP {_PREFIX}{name} {help_text}")
            out.append(f"# TYPE {_PREFIX}{name} {kind}")

        header("requests_total", "counter", "HTTP requests answered, by route and status.")
        for (method, route, status), n in sorted(self._requests.items()):
            labels = _labels({"method": method, "route": route, "status": str(status)})
            out.append(f"{_PREFIX}requests_total{labels} {n}")

        header("request_duration_seconds", "histogram", "HTTP request latency in seconds.")
        for (method, route), hist in sorted(self._latency.items()):
            base = {"method": method, "route": route}
            cumulative = 0
            for bound, n in zip(LATENCY_BUCKETS_S, hist.buckets, strict=True):
                cumulative += n
                labels = _labels({**base, "le": _number(bound)})
                out.append(f"{_PREFIX}request_duration_seconds_bucket{labels} {cumulative}")
            labels = _labels({**base, "le": "+Inf"})
            out.append(f"{_PREFIX}request_duration_seconds_bucket{labels} {hist.count}")
            out.append(f"{_PREFIX}request_duration_seconds_sum{_labels(base)} {hist.sum!r}")
            out.append(f"{_PREFIX}request_duration_seconds_count{_labels(base)} {hist.count}")

        header("writes_total", "counter", "Successful mutations, by route.")
        for (method, route), n in sorted(self._writes.items()):
            out.append(f"{_PREFIX}writes_total{_labels({'method': method, 'route': route})} {n}")

        header("revision", "gauge", "The registry revision (latest event number).")
        out.append(f"{_PREFIX}revision {revision}")
        for name in ("models", "versions", "aliases", "events"):
            header(name, "gauge", f"Rows in the registry: {name}.")
            out.append(f"{_PREFIX}{name} {int(counts.get(name, 0))}")
        header("uptime_seconds", "gauge", "Seconds since this process started serving.")
        out.append(f"{_PREFIX}uptime_seconds {time.monotonic() - self._started:.3f}")
        return "\n".join(out) + "\n"


#: The app's :class:`Metrics` (an app key of its own: central/appkeys.py holds the shared ones).
METRICS = web.AppKey("metrics", Metrics)
