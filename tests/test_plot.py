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


def drawn_colours(path: Path, panels_height: int) -> set[str]:
    """The tab10 colours of the first runs that lines in the panels (above the legend) are drawn in: those with
    at least 100 pixels of exactly that colour."""
    from matplotlib.colors import to_rgb
    from PIL import Image

    with Image.open(path) as image:
        panels = image.convert("RGB").crop((0, 0, image.width, panels_height))
        counts = {colour: count for count, colour in panels.getcolors(maxcolors=panels.width * panels.height)}
    names = ["tab:blue", "tab:orange", "tab:green"]
    return {name for name in names if counts.get(tuple(round(255 * c) for c in to_rgb(name)), 0) >= 100}


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
    width, height = png_size(out)
    assert width == PANEL_INCHES[0] * COLUMNS * DPI
    assert PANEL_INCHES[1] * rows * DPI < height < (PANEL_INCHES[1] * rows + 1) * DPI, "and a legend below"
    assert drawn_colours(out, panels_height=PANEL_INCHES[1] * rows * DPI) >= {"tab:blue", "tab:orange"}, "both runs"
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


BAD = {
    "garbage": (b"\x89\xff\x00\x13garbage", "line 1 is not UTF-8 text"),
    "not-a-number": (b"epoch,train_loss\n1,0.5\n2,abc\n", "row 3, column train_loss: 'abc' is not a number"),
    "extra-field": (b"epoch,train_loss\n1,0.5,7\n", "row 2 has 3 fields, the header 2"),
    "epoch-only": (b"epoch\n1\n2\n", "has no metric besides epoch"),
    "no-epoch": (b"step,train_loss\n1,0.5\n", "has no epoch column (its header: step,train_loss)"),
    "latin-1": ("epoch,caf\xe9\n1,0.5\n".encode("latin-1"), "line 1 is not UTF-8 text"),
    "empty": (b"", "is empty"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_damaged_metrics_csv_is_refused_in_one_line_naming_it(tmp_path, case):
    data, message = BAD[case]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_bytes(data)
    result = subprocess.run([TRICKS, "plot", tmp_path / "run", "--out", tmp_path / "out.png"], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"error: {tmp_path / 'run' / 'metrics.csv'}") and message in result.stderr
    assert len(result.stderr.splitlines()) == 1 and not (tmp_path / "out.png").exists()


def test_a_last_row_cut_short_is_skipped_with_a_note(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "metrics.csv").write_text("epoch,train_loss,val_loss\n1,0.5,0.6\n2,0.4,0.5\n3,0.3")
    result = subprocess.run([TRICKS, "plot", tmp_path / "run", "--out", tmp_path / "out.png"], capture_output=True,
                            text=True, check=False)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (
        result.stderr
        == f"note: {tmp_path / 'run' / 'metrics.csv'}: skipped the last row, cut short (a run still writing it?)\n"
    )
    assert png_size(tmp_path / "out.png")[0] > 0


@pytest.mark.parametrize("out", [".", "/", "folder"])
def test_an_out_that_is_a_folder_is_refused_in_one_line(tmp_path, two_gans, out):
    (tmp_path / "folder").mkdir()
    result = subprocess.run([TRICKS, "plot", two_gans[0], "--out", out], cwd=tmp_path, capture_output=True, text=True,
                            check=False)  # fmt: skip
    assert (result.returncode, result.stderr) == (2, f"error: --out {out}: name a PNG file to write, not a folder\n")


def test_each_run_keeps_one_colour_in_every_panel_and_fifty_stay_apart(tmp_path):
    """Two runs with different metrics (a classifier's, a language model's): each run's lines share a colour
    in every panel where it has one; the legend is the figure's, with every run. Fifty runs: fifty styles."""
    from generator.plot import figure_of, panels_of, read_run, run_styles

    for name, header in [("classify", "train_loss,val_acc,lr"), ("lm", "train_loss,val_bpc,lr")]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.csv").write_text(f"epoch,{header}\n1,1,0.5,0.1\n2,0.5,0.6,0.1\n")
    runs = [read_run(tmp_path / "lm"), read_run(tmp_path / "classify")]
    fig = figure_of(runs, panels_of(runs))
    colours = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            colours.setdefault(line.get_label(), set()).add(line.get_color())
    assert set(colours) == {"lm", "classify"} and all(len(c) == 1 for c in colours.values())
    assert colours["lm"] != colours["classify"]
    assert [text.get_text() for text in fig.legends[0].get_texts()] == ["lm", "classify"]
    styles = run_styles(50)
    assert len({(str(style["color"]), style["linestyle"]) for style in styles}) == 50
