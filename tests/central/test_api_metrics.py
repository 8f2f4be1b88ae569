"""central.metrics: the Prometheus text format written by hand, and what the app counts."""

from __future__ import annotations

import re

from modelreg.central.metrics import LATENCY_BUCKETS_S, Metrics, escape_label
from tests.central.conftest import Api

# One sample line of the text format: name, optional {labels}, value.
_SAMPLE = re.compile(
    r'[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})? \S+'
)


def _sample(text: str, prefix: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith(prefix)]


class TestFormat:
    def test_every_line_parses(self) -> None:
        """Every line is a HELP/TYPE comment or a well-formed sample, even with odd labels."""
        metrics = Metrics()
        metrics.observe("GET", '/v1/odd"route\\\n', 200, 0.001)
        text = metrics.render(3, {"models": 1})
        bad = [
            line
            for line in text.splitlines()
            if not line.startswith(("# HELP ", "# TYPE ")) and not _SAMPLE.fullmatch(line)
        ]
        expected: list[str] = []
        assert expected == bad

    def test_escape_label(self) -> None:
        """Backslash, double quote and newline are escaped."""
        expected = 'a\\\\b\\"c\\nd'
        assert expected == escape_label('a\\b"c\nd')

    def test_histogram_is_cumulative(self) -> None:
        """Bucket counts are cumulative, +Inf equals the count, and the sum adds up."""
        metrics = Metrics()
        for seconds in (0.0001, 0.003, 0.003, 0.2, 30.0):
            metrics.observe("GET", "/x", 200, seconds)
        text = metrics.render(0, {})
        buckets = [
            int(line.rsplit(" ", 1)[1])
            for line in _sample(text, "modelreg_central_request_duration_seconds_bucket")
        ]
        total = float(_sample(text, "modelreg_central_request_duration_seconds_sum")[0].split()[1])
        index_5ms = LATENCY_BUCKETS_S.index(0.005)
        expected = (len(LATENCY_BUCKETS_S) + 1, 1, 3, 4, 5, round(30.2061, 6))
        assert expected == (
            len(buckets),
            buckets[0],
            buckets[index_5ms],
            buckets[-2],
            buckets[-1],
            round(total, 6),
        )

    def test_writes_count_successful_mutations_only(self) -> None:
        """writes_total counts 2xx non-GET answers, not reads or failures."""
        metrics = Metrics()
        metrics.observe("POST", "/v1/models", 201, 0.01)
        metrics.observe("POST", "/v1/models", 409, 0.01)
        metrics.observe("GET", "/v1/models", 200, 0.01)
        expected = ['modelreg_central_writes_total{method="POST",route="/v1/models"} 1']
        assert expected == _sample(metrics.render(0, {}), "modelreg_central_writes_total{")


class TestApp:
    async def test_unmatched_and_error_statuses_are_counted(self, api: Api) -> None:
        """Unknown paths count as route "unmatched"; 401s count under their route."""
        await api.call("GET", "/nowhere", token=None)
        await api.call("GET", "/v1/models", token=None)
        _, text = await api.call("GET", "/metrics", token=None)
        expected = [
            'modelreg_central_requests_total{method="GET",route="/v1/models",status="401"} 1',
            'modelreg_central_requests_total{method="GET",route="unmatched",status="404"} 1',
        ]
        lines = text.splitlines()
        assert expected == [line for line in expected if line in lines]

    async def test_writes_and_revision_follow_the_registry(self, api: Api) -> None:
        """A write moves writes_total and the revision gauge."""
        _, created = await api.call("POST", "/v1/models", json={"name": "fraud"})
        _, text = await api.call("GET", "/metrics", token=None)
        expected = [
            'modelreg_central_writes_total{method="POST",route="/v1/models"} 1',
            f"modelreg_central_revision {created['revision']}",
        ]
        lines = text.splitlines()
        assert expected == [line for line in expected if line in lines]
