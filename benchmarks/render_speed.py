"""`tricks new` against `cookiecutter --no-input` rendering the same template with the same choices:
the wall time of each command, alternating, repeated. Target: tricks new <= 1.2x cookiecutter.

    python benchmarks/render_speed.py --repeats 15
"""

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TRICKS = ["--seed", "--amp", "--clip", "--accumulate", "--lr-plot", "--early-stop"]


def commands(out: Path, i: int) -> dict[str, list[str]]:
    answers = [f"{flag.removeprefix('--').replace('-', '_')}=yes" for flag in TRICKS]
    return {
        "tricks new": [str(BIN / "tricks"), "new", str(out / f"t{i}"), *TRICKS],
        "cookiecutter --no-input": [str(BIN / "cookiecutter"), "--no-input", str(ROOT / "templates" / "train"),
                                    "-o", str(out), f"project_name=c{i}", *answers],
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    seconds = {"tricks new": [], "cookiecutter --no-input": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats + 1):
            for name, command in commands(Path(tmp), i).items():
                started = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True)
                if i:  # the first round warms the file cache
                    seconds[name].append(time.perf_counter() - started)
    tricks, cookiecutter = (statistics.median(values) for values in seconds.values())
    for name, values in seconds.items():
        print(f"{name:24s} median {1000 * statistics.median(values):.0f} ms (min {1000 * min(values):.0f} ms)")
    print(f"tricks new / cookiecutter --no-input = {tricks / cookiecutter:.2f} (target <= 1.2)")


if __name__ == "__main__":
    main()
