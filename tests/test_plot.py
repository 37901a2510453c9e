"""`tricks plot`: real runs in one PNG, a panel per metric, labelled from each run's run.json; one-line
refusals; and the generator still never imports torch, and matplotlib only to draw."""

import json
import math
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from generator.plot import COLUMNS, DPI, PANEL_INCHES
from tests.helpers import run_main

TRICKS = Path(sys.executable).parent / "tricks"  # the installed command


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])  # IHDR: width, height


@pytest.fixture(scope="module")
def two_gans(tmp_path_factory, rendered):
    """A WGAN-GP run and a plain GAN run, two short epochs each."""
    root = tmp_path_factory.mktemp("runs")
    argv = ["--epochs", 2, "--steps-per-epoch", 5, "--n-critic", 2, "--seed", 0]
    run_main(rendered("gan", gp=True, seed=True), [*argv, "--out-dir", root / "wgan-gp"])
    run_main(rendered("gan", seed=True), [*argv, "--n-critic", 1, "--out-dir", root / "plain"])
    return root / "wgan-gp", root / "plain"


def test_two_runs_make_one_png_with_a_panel_per_metric(tmp_path, two_gans):
    out = tmp_path / "gans.png"
    result = subprocess.run([TRICKS, "plot", *two_gans, "--out", out], capture_output=True, text=True, check=True)
    panels = ["critic_loss", "generator_loss", "wasserstein", "gp", "lr", "modes_covered", "hq_fraction"]
    assert result.stdout == f"wrote {out}: 2 runs, a panel each for {', '.join(panels)}\n"
    rows = math.ceil(len(panels) / COLUMNS)
    assert png_size(out) == (PANEL_INCHES[0] * COLUMNS * DPI, PANEL_INCHES[1] * rows * DPI)
    info = json.loads((two_gans[0] / "run.json").read_text())
    assert info["task"] == "gan" and info["tricks"] == ["seed", "gp"] and info["args"]["n_critic"] == 2


def test_labels_name_the_folder_the_tricks_and_the_options_that_differ(two_gans):
    from generator.plot import labels_of, read_run

    assert labels_of([read_run(folder) for folder in two_gans]) == [
        "wgan-gp (seed, gp): n-critic 2",
        "plain (seed): n-critic 1",
    ]


def test_a_folder_without_metrics_is_refused_in_one_line(tmp_path, two_gans):
    (tmp_path / "empty").mkdir()
    command = [TRICKS, "plot", two_gans[0], tmp_path / "empty"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr == f"error: {tmp_path / 'empty'} holds no metrics.csv: not a run folder\n"
    assert not (Path.cwd() / "runs.png").exists()


def test_the_generator_imports_matplotlib_to_draw_and_never_torch(tmp_path, two_gans):
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from generator import cli, plot\n"
        "print('matplotlib' in sys.modules)\n"
        f"plot.plot_runs([Path({str(two_gans[0])!r})], Path({str(tmp_path / 'one.png')!r}))\n"
        "print('matplotlib' in sys.modules, 'torch' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True", "False"]
