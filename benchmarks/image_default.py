"""The image task's default run, as a user starts it (`tricks new shapes --task image --seed` then `python
train.py --seed S`), for three seeds: its best and final validation accuracy and its time on this machine; then
`--predict` on the validation images of the first run, drawn as docs/image-predictions.png (a few images each
with the label predicted and its probability; red where it is wrong).

    python benchmarks/image_default.py             # about 3 minutes on 2 cores
"""

from __future__ import annotations

import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import metrics, render  # noqa: E402


def picture(project: Path, out_dir: Path, path: Path, count: int = 18) -> None:
    from PIL import Image, ImageDraw

    with open(out_dir / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    rows = rows[:: max(1, len(rows) // count)][:count]
    cell, scale = 40, 3
    sheet = Image.new("RGB", (6 * cell * scale, 3 * (cell * scale + 28)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, row in enumerate(rows):
        x, y = (i % 6) * cell * scale, (i // 6) * (cell * scale + 28)
        image = Image.open(project / "data" / "shapes" / "val" / row["file"]).convert("RGB")
        sheet.paste(image.resize((cell * scale, cell * scale), Image.Resampling.NEAREST), (x, y))
        wrong = row["file"].split("/")[0] != row["label"]
        draw.text((x + 6, y + cell * scale + 6), f"{row['label']} {float(row['probability']):.2f}",
                  fill="red" if wrong else "black")  # fmt: skip
    sheet.save(path)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="image-default-"))
    project = render(tmp / "shapes", "image", seed=True)
    results = []
    for seed in (0, 1, 2):
        started = time.time()
        subprocess.run([sys.executable, "train.py", "--seed", str(seed), "--out-dir", f"runs/{seed}"], cwd=project,
                       check=True, capture_output=True)  # fmt: skip
        rows = metrics(project / "runs" / str(seed))
        accuracy = [float(row["val_acc"]) for row in rows]
        results.append((seed, max(accuracy), accuracy[-1], time.time() - started))
        print(f"seed {seed}: best val_acc {max(accuracy):.3f}, last {accuracy[-1]:.3f}, {results[-1][3]:.0f} s")
    best, seconds = statistics.median(r[1] for r in results), statistics.median(r[3] for r in results)
    print(f"median best val_acc {best:.3f}, median time {seconds:.0f} s (the first run also draws the data set)")
    subprocess.run([sys.executable, "train.py", "--out-dir", "runs/0", "--predict", "data/shapes/val"], cwd=project,
                   check=True, capture_output=True)  # fmt: skip
    picture(project, project / "runs" / "0", ROOT / "docs" / "image-predictions.png")
    print("wrote docs/image-predictions.png")


if __name__ == "__main__":
    main()
