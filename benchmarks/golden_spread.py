"""How far the seeded metrics goldens move when the CPU's instruction set changes.

Goldens must hold on any x86 CPU that runs the pinned torch; this machine stands in for the others by
capping the instruction sets that torch's kernels (ATEN_CPU_CAPABILITY), oneDNN and MKL may use, reruns
each golden's seeded run under every cap, and prints the largest relative difference from golden/ per
case. test_goldens' tolerance (rel 1e-4) must stay well above what this prints.

    python benchmarks/golden_spread.py
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CAPS = {
    "as the CPU allows": {},
    "AVX2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "no vector kernels": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
RUN = """
import csv, json, sys
from pathlib import Path
from tests.goldens import render_case, run_metrics
case, tmp = sys.argv[1], Path(sys.argv[2])
with open(run_metrics(case, render_case(case, tmp / "p"), tmp / "run"), newline="") as f:
    print(json.dumps(list(csv.DictReader(f))))
"""


def rows(case: str, env: dict[str, str]) -> list[dict[str, str]]:
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-c", RUN, case, tmp],
            cwd=ROOT,
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            check=True,
        )
    return json.loads(result.stdout.strip().splitlines()[-1])


def spread(run: list[dict[str, str]], golden: list[dict[str, str]]) -> float:
    """The largest relative difference over every golden cell."""
    worst = 0.0
    for row, expected in zip(run, golden, strict=True):
        for column, value in expected.items():
            a, b = float(row[column]), float(value)
            worst = max(worst, abs(a - b) / max(abs(b), 1e-6))
    return worst


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from tests.goldens import GOLDEN, METRIC_RUNS

    print("| case | " + " | ".join(CAPS) + " |")
    print("| --- |" + " --- |" * len(CAPS))
    for case in METRIC_RUNS:
        with open(GOLDEN / case / "metrics.csv", newline="") as f:
            golden = list(csv.DictReader(f))
        cells = [f"{spread(rows(case, env), golden):.1e}" for env in CAPS.values()]
        print(f"| {case} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
