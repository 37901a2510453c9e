{% set gan = cookiecutter.task == "gan" %}
"""A smoke test of train.py: a short run writes a metrics row per epoch and a checkpoint that loads.
Run it with: pytest test_train.py"""

import csv
import math

import torch

import train


def test_a_short_run_writes_its_outputs(tmp_path):
    out_dir = tmp_path / "run"
{% if gan %}
    train.main(["--epochs", "2", "--steps-per-epoch", "5", "--out-dir", str(out_dir)])
{% elif cookiecutter.task == "lm" %}
    train.main(["--epochs", "2", "--steps-per-epoch", "5", "--n-layer", "1", "--out-dir", str(out_dir)])
{% elif cookiecutter.task == "image" %}
    train.main(["--epochs", "2", "--image-size", "16", "--width", "8", "--num-workers", "0", "--out-dir", str(out_dir)])
{% else %}
    train.main(["--epochs", "2", "--out-dir", str(out_dir)])
{% endif %}
    with open(out_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert all(math.isfinite(float(row["{{ "generator_loss" if gan else "train_loss" }}"])) for row in rows)
    checkpoint = torch.load(out_dir / "last.pt", weights_only=False)
    assert checkpoint["epoch"] == 2
