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
        """Every storm (lookup-server baseline, sidecar, central) answers every resolve
        correctly, with no error."""
        rows = bench_sidecar_storm.run(connections=6, processes=2, resolves=3, repeats=1, models=4)
        by_name = {row.name.split(" (")[0]: row for row in rows}
        runs = [
            *by_name["storm on a minimal uvloop lookup server"].extra["runs"],
            *by_name["storm on the sidecar"].extra["runs"],
            by_name["storm on central HTTP"].extra["run"],
        ]
        assert [(18, 0)] * 3 == [(run["resolves"], run["errors"]) for run in runs]
        assert "storm throughput, sidecar ÷ central" in by_name

    def test_index(self) -> None:
        """Load, reload under traffic, cold start and RSS are all measured."""
        rows = bench_sidecar_index.run(models=3, versions_per_model=4, loads=1, starts=1)
        assert 6 == len(rows)
        assert rows[2].extra["during_n"] >= 1
        assert "| sidecar RSS (12 versions) |" in markdown(rows)
