"""The golden cases: each renders a train.py and README.md that golden/<case>/ holds, reviewed.
Some also hold the metrics.csv of a short seeded run. `make golden` (python -m tests.goldens --write)
writes them afresh; review the diff before committing it."""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from generator.options import TRICK_NAMES, Options
from generator.render import render_project

GOLDEN = Path(__file__).resolve().parent.parent / "golden"
FILES = ("train.py", "README.md")
PROJECT_NAME = "my-experiment"

SIX = ("seed", "amp", "clip", "accumulate", "lr_plot", "early_stop")
CASES = {
    "no-tricks": Options.create(),
    **{trick.replace("_", "-"): Options.create(**{trick: True}) for trick in SIX},
    "all-six": Options.create(**dict.fromkeys(SIX, True)),
    "gan": Options.create("gan"),
    "gp": Options.create(gp=True),
    "amp-gp-early-stop": Options.create(amp=True, gp=True, early_stop=True),
    "gp-all-six": Options.create(gp=True, **dict.fromkeys(SIX, True)),
    "ddp": Options.create(ddp=True),
    "ddp-all": Options.create(ddp=True, **dict.fromkeys(SIX, True)),
    "gp-ddp": Options.create(gp=True, ddp=True),
    "ema": Options.create(ema=True),
    "compile": Options.create(compile=True),
    "tensorboard": Options.create(tensorboard=True),
    "gp-every-trick": Options.create(**{name: True for name in TRICK_NAMES}),
    "every-trick": Options.create(**{name: True for name in TRICK_NAMES if name != "gp"}),
    "all-but-amp": Options.create(**{**dict.fromkeys(SIX, True), "amp": False}),
    "gp-all-but-amp": Options.create(gp=True, **{**dict.fromkeys(SIX, True), "amp": False}),
    "lm": Options.create("lm"),
    "lm-every-trick": Options.create("lm", **{name: True for name in TRICK_NAMES if name != "gp"}),
    "lm-all-but-amp": Options.create("lm", **{**dict.fromkeys(SIX, True), "amp": False}),
    "image": Options.create("image"),
    "image-every-trick": Options.create("image", **{name: True for name in TRICK_NAMES if name != "gp"}),
}
# the language model's golden run: a tiny GPT on a frozen text of the repository's own
CORPUS = Path(__file__).resolve().parent / "data" / "corpus.txt"
TINY_LM = [
    *["--data", str(CORPUS), "--n-layer", "2", "--n-head", "2", "--n-embd", "32", "--block-size", "32"],
    *["--batch-size", "8", "--eval-windows", "32", "--sample-length", "20"],
]
# seeded short runs whose metrics.csv (timing aside) golden/<case>/metrics.csv holds: float32 runs only, on
# one thread. bfloat16 rounding differs between CPUs (AVX-512 BF16 or not) by more than any useful tolerance;
# --amp runs are held to their guarantees by property tests instead (test_classify_runs, test_gan_runs).
METRIC_RUNS = {
    "seed": ["--epochs", "3", "--threads", "1"],
    "all-but-amp": ["--epochs", "3", "--threads", "1"],
    "gp-all-but-amp": ["--epochs", "2", "--steps-per-epoch", "10", "--threads", "1"],
    "lm-all-but-amp": [*TINY_LM, "--epochs", "2", "--steps-per-epoch", "10", "--warmup-steps", "5", "--threads", "1"],
}


def render_case(case: str, out: Path) -> Path:
    return render_project(CASES[case], PROJECT_NAME, out)


def run_metrics(case: str, project: Path, out_dir: Path) -> Path:
    """Run the case's short seeded training; returns its metrics.csv."""
    from tests.helpers import load, run_main

    run_main(load(project / "train.py"), [*METRIC_RUNS[case], "--out-dir", out_dir])
    return out_dir / "metrics.csv"


def write_all() -> None:
    import csv

    from tests.helpers import TIMING

    shutil.rmtree(GOLDEN, ignore_errors=True)
    with tempfile.TemporaryDirectory() as tmp:
        for case in CASES:
            project = render_case(case, Path(tmp) / case)
            (GOLDEN / case).mkdir(parents=True)
            for name in FILES:
                shutil.copy(project / name, GOLDEN / case / name)
            if case in METRIC_RUNS:
                with open(run_metrics(case, project, Path(tmp) / f"{case}-run"), newline="") as f:
                    rows = list(csv.DictReader(f))
                columns = [column for column in rows[0] if column not in TIMING]
                with open(GOLDEN / case / "metrics.csv", "w", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
                    writer.writeheader()
                    writer.writerows(rows)
            print(f"wrote golden/{case}/")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", action="store_true", help="write every golden afresh")
    if not parser.parse_args().write:
        sys.exit("nothing to do: pass --write to write the goldens afresh (then review the diff)")
    write_all()
