"""Smoke test of the sidecar benchmark harnesses: each runs end to end with tiny sizes.

No figure is asserted (performance is measured by ``python -m benchmarks.run``, never by a
test); what is checked is that every harness starts its processes, gets correct answers,
counts them and stops everything again.
"""

from __future__ import annotations

import pytest

from benchmarks import bench_sidecar_index, bench_sidecar_latency, bench_sidecar_storm
from benchmarks.run import markdown

pytestmark = [pytest.mark.integration, pytest.mark.slow]


class TestHarnesses:
    def test_latency(self) -> None:
        """The latency harness measures echo, raw sidecar and Client series."""
        rows = bench_sidecar_latency.run(requests=40, rounds=2, models=3)
        assert [40, 40, 40] == [row.extra["n"] for row in rows]
        assert rows[2].met is not None

    def test_storm(self) -> None:
        """Both storms answer every resolve correctly, with no error."""
        rows = bench_sidecar_storm.run(connections=6, processes=2, resolves=3, repeats=1, models=4)
        sidecar_run = rows[0].extra["runs"][0]
        central_run = rows[1].extra["run"]
        assert (18, 0) == (sidecar_run["resolves"], sidecar_run["errors"])
        assert (18, 0) == (central_run["resolves"], central_run["errors"])
        assert "sidecar ÷ central" in rows[2].name

    def test_index(self) -> None:
        """Load, reload under traffic, cold start and RSS are all measured."""
        rows = bench_sidecar_index.run(models=3, versions_per_model=4, loads=1, starts=1)
        assert 6 == len(rows)
        assert rows[2].extra["during_n"] >= 1
        assert "| sidecar RSS (12 versions) |" in markdown(rows)
