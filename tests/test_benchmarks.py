"""The loop-speed benchmark compares what it says it compares: its ratios pair runs of the same repeat,
its report shows the measurement's noise, and its hand-written loop does the generated script's work
(the minimal loop less). Lightning and Accelerate, benchmark extras, are not needed here."""

import pytest
import torch

from tests.helpers import ROOT, load, metrics

loop_speed = load(ROOT / "benchmarks" / "loop_speed.py")


def test_a_ratio_is_the_median_of_paired_ratios():
    # repeat by repeat: 2, 0.5 and 1, whose median is 1; the lists' own medians (4 and 6) would give 0.67
    assert loop_speed.ratio([2.0, 4.0, 6.0], [1.0, 8.0, 6.0]) == 1.0
    with pytest.raises(ValueError):
        loop_speed.ratio([1.0, 2.0], [1.0])


def test_the_report_gives_each_target_and_the_noise():
    seconds = {"tiny": {way: [1.0, 1.0] for way in loop_speed.WAYS}}
    seconds["tiny"]["generated"] = [1.02, 1.04]
    seconds["tiny"][loop_speed.CONTROL] = [0.99, 0.97]
    *_, header, _, summary = loop_speed.report(seconds).splitlines()
    assert "generated / hand-written (target <= 1.03)" in header
    assert header.endswith("| noise: hand-written, again / hand-written |")
    assert summary.startswith("| tiny | 1.030 |") and summary.endswith("| 0.980 |")


@pytest.mark.slow
def test_the_hand_written_loop_does_the_generated_scripts_work(tmp_path):
    module = loop_speed.render_generated()
    files = {}
    for way in ("generated", "hand-written", "hand-written, best.pt only"):
        out = tmp_path / way.replace(" ", "_").replace(",", "")
        out.mkdir()
        with loop_speed.quiet():
            loop_speed.WAYS[way]("tiny", out, module)
        files[way] = sorted(path.name for path in out.iterdir())
    # beyond the hand-written loop's files: the run folder's lock, last.pt.prev (a hard link per epoch) and run.json
    assert files["generated"] == [".lock", "best.pt", "last.pt", "last.pt.prev", "metrics.csv", "run.json"]
    assert files["hand-written"] == ["best.pt", "last.pt"]
    assert files["hand-written, best.pt only"] == ["best.pt"]
    generated = torch.load(tmp_path / "generated" / "last.pt", weights_only=False)
    hand = torch.load(tmp_path / "hand-written" / "last.pt", weights_only=False)
    assert {"model", "optimizer", "scheduler", "epoch"} <= set(generated) & set(hand)
    assert hand["epoch"] == generated["epoch"] == loop_speed.EPOCHS
    # the same training: as many optimizer steps (accumulation windows), each counted by AdamW and the schedule,
    # ending at the same learning rate, on the same model (the weights differ: the generated script draws its
    # own shuffle)
    steps = loop_speed.optimizer_steps("tiny")
    for saved in (generated, hand):
        assert saved["scheduler"]["last_epoch"] == steps
        assert {int(state["step"]) for state in saved["optimizer"]["state"].values()} == {steps}
    assert generated["optimizer"]["param_groups"][0]["lr"] == hand["optimizer"]["param_groups"][0]["lr"]
    assert generated["model"].keys() == hand["model"].keys()
    assert all(0 < float(row["grad_norm"]) for row in metrics(tmp_path / "generated"))


@pytest.mark.slow
def test_the_hand_written_gpt_loop_does_the_generated_scripts_work(tmp_path):
    """The same model, optimizer, schedule and batches: both ways end with the same weights."""
    lm_speed = load(ROOT / "benchmarks" / "lm_speed.py")
    module = lm_speed.render_generated()
    for way in lm_speed.WAYS:
        (tmp_path / way).mkdir()
        with loop_speed.quiet():
            lm_speed.WAYS[way]("small", tmp_path / way, module)
    generated = torch.load(tmp_path / "generated" / "last.pt", weights_only=False)
    hand = torch.load(tmp_path / "hand-written" / "last.pt", weights_only=False)
    assert hand["epoch"] == generated["epoch"] == lm_speed.EPOCHS
    assert generated["model"].keys() == hand["model"].keys()
    assert all(torch.equal(generated["model"][key], hand["model"][key]) for key in hand["model"])


@pytest.mark.slow
def test_the_image_benchmarks_hand_written_loop_does_the_generated_scripts_training(tmp_path):
    """benchmarks/image_speed.py: both ways train the same model for as many optimizer steps, ending at the same
    learning rate, each with a checkpoint of the model, optimizer and scheduler (on the default data set)."""
    image_speed = load(ROOT / "benchmarks" / "image_speed.py")
    module = load(image_speed.render(tmp_path / "project", "image") / "train.py")
    for way in ("generated", "hand"):
        (tmp_path / way).mkdir()
    image_speed.generated(module, tmp_path / "generated", "small", 0, 1)
    image_speed.hand_written(module, tmp_path / "hand", "small", 0, 1)
    generated = torch.load(tmp_path / "generated" / "last.pt", weights_only=False)
    hand = torch.load(tmp_path / "hand" / "last.pt", weights_only=False)
    steps = 1440 // 32  # the default data set's training images, in batches of 32
    assert generated["scheduler"]["last_epoch"] == hand["scheduler"]["last_epoch"] == steps
    assert generated["scheduler"]["_last_lr"] == hand["scheduler"]["_last_lr"]
    assert {k: v.shape for k, v in generated["model"].items()} == {k: v.shape for k, v in hand["model"].items()}
