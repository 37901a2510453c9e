"""Each golden case renders exactly what golden/<case>/ holds; a mismatch prints a unified diff."""

import difflib

import pytest

from tests.goldens import CASES, FILES, GOLDEN, METRIC_RUNS, render_case, run_metrics
from tests.helpers import metrics


@pytest.mark.parametrize("case", CASES)
def test_render_matches_golden(case, tmp_path):
    project = render_case(case, tmp_path)
    for name in FILES:
        expected = (GOLDEN / case / name).read_text()
        actual = (project / name).read_text()
        if actual != expected:
            diff = difflib.unified_diff(
                expected.splitlines(keepends=True),
                actual.splitlines(keepends=True),
                f"golden/{case}/{name}",
                f"rendered {name}",
            )
            pytest.fail(f"{case}/{name} differs from its golden (run `make golden` if intended):\n{''.join(diff)}")


def test_every_golden_belongs_to_a_case():
    unused = sorted(p.name for p in GOLDEN.iterdir() if p.name not in CASES)
    assert not unused, f"goldens that no case renders: {unused}"
    for case in CASES:
        present = {p.name for p in (GOLDEN / case).iterdir()}
        expected = set(FILES) | ({"metrics.csv"} if case in METRIC_RUNS else set())
        assert present == expected, f"golden/{case} holds {sorted(present)}, expected {sorted(expected)}"


@pytest.mark.parametrize("case", METRIC_RUNS)
def test_seeded_metrics_match_golden(case, tmp_path):
    project = render_case(case, tmp_path)
    rows = metrics(run_metrics(case, project, tmp_path / "run").parent)
    golden = metrics(GOLDEN / case)
    assert len(rows) == len(golden)
    for row, expected in zip(rows, golden, strict=False):
        assert row.keys() == expected.keys()
        for column, value in expected.items():
            assert float(row[column]) == pytest.approx(float(value), rel=1e-4, abs=1e-6), (
                f"epoch {row['epoch']}, {column}"
            )
