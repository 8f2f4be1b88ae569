"""The sidecar's counters and latency histogram, rendered as Prometheus text.

Plain integers and one list per histogram: updating them is a few dict/list operations on the
lookup path, and rendering happens only when ``/metrics`` is scraped.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable

__all__ = ["LATENCY_BUCKETS_S", "Metrics"]

#: Upper bounds of the lookup latency histogram, in seconds (time spent inside the sidecar
#: from a decoded request to its encoded answer; the socket round trip is not included).
LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.000005,
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.1,
    1.0,
)
_BUCKETS_NS = tuple(int(b * 1e9) for b in LATENCY_BUCKETS_S)


class Metrics:
    """Counters of one sidecar process. ``gauges`` are read when rendering."""

    def __init__(self) -> None:
        #: (op, result) -> count; result is "ok" or an error code.
        self.lookups: dict[tuple[str, str], int] = {}
        self.errors = 0
        self.reloads = 0
        self.reload_failures = 0
        #: Error lines the litestream children logged.
        self.follower_errors = 0
        self.connections_total = 0
        self.connections_rejected = 0
        self._hist = [0] * (len(_BUCKETS_NS) + 1)
        self._hist_sum_ns = 0
        self.gauges: dict[str, Callable[[], float]] = {}
        #: name -> (type, help, read): series rendered with HELP and TYPE lines (the
        #: ``modelreg_`` scheme new metrics follow; counters end in ``_total``).
        self.described: dict[str, tuple[str, str, Callable[[], float]]] = {}

    def observe(self, op: str, result: str, elapsed_ns: int) -> None:
        """Count one answered request and its handling time in nanoseconds."""
        key = (op, result)
        lookups = self.lookups
        lookups[key] = lookups.get(key, 0) + 1
        if result != "ok":
            self.errors += 1
        self._hist[bisect_left(_BUCKETS_NS, elapsed_ns)] += 1
        self._hist_sum_ns += elapsed_ns

    def observe_many(self, op: str, result: str, count: int, each_ns: int) -> None:
        """Count ``count`` requests answered together, each taking ``each_ns`` on average."""
        key = (op, result)
        lookups = self.lookups
        lookups[key] = lookups.get(key, 0) + count
        if result != "ok":
            self.errors += count
        self._hist[bisect_left(_BUCKETS_NS, each_ns)] += count
        self._hist_sum_ns += each_ns * count

    def describe(self, name: str, kind: str, text: str, read: Callable[[], float]) -> None:
        """Add a series read at scrape time; ``kind`` is ``counter`` or ``gauge``."""
        assert kind in ("counter", "gauge") and name.startswith("modelreg_"), name
        assert (kind == "counter") == name.endswith("_total"), name
        self.described[name] = (kind, text, read)

    @property
    def total(self) -> int:
        """Requests answered so far."""
        return sum(self.lookups.values())

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4)."""
        lines = [
            "# HELP reg_sidecar_lookups_total Requests answered, by op and result.",
            "# TYPE reg_sidecar_lookups_total counter",
        ]
        for (op, result), count in sorted(self.lookups.items()):
            lines.append(f'reg_sidecar_lookups_total{{op="{op}",result="{result}"}} {count}')
        lines += [
            "# HELP reg_sidecar_lookup_seconds Time to answer a request inside the sidecar.",
            "# TYPE reg_sidecar_lookup_seconds histogram",
        ]
        cumulative = 0
        for bound, count in zip(LATENCY_BUCKETS_S, self._hist, strict=False):
            cumulative += count
            lines.append(f'reg_sidecar_lookup_seconds_bucket{{le="{bound:g}"}} {cumulative}')
        cumulative += self._hist[-1]
        lines.append(f'reg_sidecar_lookup_seconds_bucket{{le="+Inf"}} {cumulative}')
        lines.append(f"reg_sidecar_lookup_seconds_sum {self._hist_sum_ns / 1e9:.9f}")
        lines.append(f"reg_sidecar_lookup_seconds_count {cumulative}")
        counters = {
            "reg_sidecar_reloads_total": ("Index reloads that succeeded.", self.reloads),
            "reg_sidecar_reload_failures_total": ("Index loads that failed.", self.reload_failures),
            "reg_sidecar_connections_total": ("Connections accepted.", self.connections_total),
            "reg_sidecar_connections_rejected_total": (
                "Connections refused by the connection limit.",
                self.connections_rejected,
            ),
        }
        for name, (text, value) in counters.items():
            lines += [f"# HELP {name} {text}", f"# TYPE {name} counter", f"{name} {value}"]
        for name, read in sorted(self.gauges.items()):
            lines += [f"# TYPE {name} gauge", f"{name} {read():g}"]
        for name, (kind, text, read) in sorted(self.described.items()):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {read():g}"]
        return "\n".join(lines) + "\n"
