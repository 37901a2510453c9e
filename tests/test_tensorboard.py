"""--tensorboard: the event files hold every metrics.csv column per epoch and the training loss and learning
rate every --log-every steps, on the optimizer step's axis; a resumed run repeats no step (even after a
crash that logged past last.pt), and the writer is closed on every way out."""

import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from tests.helpers import metrics, render, run_main, stop_after


def scalars(out_dir) -> dict[str, list[tuple[int, float]]]:
    """Every scalar tag in the run's event files: its (step, value) pairs, as TensorBoard reads them."""
    events = EventAccumulator(str(out_dir / "tensorboard"))
    events.Reload()
    return {tag: [(event.step, event.value) for event in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_the_event_files_hold_every_column_per_epoch_and_the_loss_every_n_steps(tmp_path, rendered):
    module = rendered("classify", tensorboard=True, seed=True)
    run_main(module, ["--epochs", 3, "--log-every", 10, "--out-dir", tmp_path])
    logged, rows = scalars(tmp_path), metrics(tmp_path, drop=set())
    steps = [32, 64, 96]  # 2,000 samples in batches of 64: 32 optimizer steps an epoch
    assert set(logged) == {f"epoch/{name}" for name in rows[0]} | {"step/train_loss", "step/lr"}
    for name in rows[0]:
        expected = [(step, pytest.approx(float(row[name]))) for step, row in zip(steps, rows, strict=True)]
        assert logged[f"epoch/{name}"] == expected
    assert [step for step, _ in logged["step/train_loss"]] == list(range(10, 97, 10))
    assert [step for step, _ in logged["step/lr"]] == list(range(10, 97, 10))


def test_a_resumed_run_repeats_no_step_even_after_a_crash_that_logged_past_last_pt(tmp_path, rendered, monkeypatch):
    """A run stopped after epoch 2, its last.pt then put back to epoch 1's (as if it had been killed just
    before saving epoch 2): the resumed run's event stream equals an uninterrupted run's."""
    module = rendered("gan", tensorboard=True, seed=True, gp=True)
    argv = ["--epochs", 3, "--steps-per-epoch", 6, "--n-critic", 2, "--log-every", 4, "--seed", 2]
    run_main(module, [*argv, "--out-dir", tmp_path / "whole"])
    with monkeypatch.context() as patch:
        stop_after(module, patch, epoch=2)
        with pytest.raises(SystemExit):
            run_main(module, [*argv, "--out-dir", tmp_path / "cut"])
    shutil.copy(tmp_path / "cut" / "last.pt.prev", tmp_path / "cut" / "last.pt")  # back to epoch 1
    run_main(module, [*argv, "--out-dir", tmp_path / "cut", "--resume"])
    whole, cut = scalars(tmp_path / "whole"), scalars(tmp_path / "cut")
    assert set(whole) == set(cut) and "step/generator_loss" in whole and "epoch/hq_fraction" in whole
    for tag in whole:
        steps = [step for step, _ in cut[tag]]
        assert steps == sorted(set(steps)), f"{tag}: a step twice"
        if tag != "epoch/epoch_time_s":
            assert cut[tag] == whole[tag], tag


@pytest.mark.parametrize("way_out", ["ctrl-c", "diverging loss"])
def test_the_writer_is_closed_on_every_way_out(tmp_path, rendered, monkeypatch, way_out):
    module = rendered("classify", tensorboard=True, seed=True)
    closed = []
    open_board = module.open_board

    def recorded(*args, **kwargs):
        board = open_board(*args, **kwargs)
        close = board.close
        board.close = lambda: (closed.append(str(board.log_dir)), close())
        return board

    monkeypatch.setattr(module, "open_board", recorded)
    argv = ["--epochs", 3, "--out-dir", tmp_path]
    if way_out == "ctrl-c":
        stop_after(module, monkeypatch, epoch=1)
    else:
        argv += ["--lr", "1e30"]
    with pytest.raises(SystemExit):
        run_main(module, argv)
    assert closed == [str(tmp_path / "tensorboard")]


def test_the_requirements_gain_tensorboard_only_when_chosen(tmp_path):
    with_it = render(tmp_path / "with", "classify", tensorboard=True)
    without = render(tmp_path / "without", "classify")
    assert "tensorboard" in (with_it / "requirements.txt").read_text().split()
    assert "tensorboard" not in (without / "requirements.txt").read_text()


@pytest.mark.slow  # torchrun and two training processes
def test_under_ddp_rank_0_alone_writes_events(tmp_path):
    """Two processes: one event file, written by rank 0 (the other would add a second file, and each step twice
    to TensorBoard's view), holding every epoch's row of metrics.csv."""
    from tests.test_ddp import torchrun

    project = render(tmp_path / "p", "classify", tensorboard=True, ddp=True, seed=True)
    result = torchrun(project, "--epochs", 2, "--log-every", 4, "--out-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    files = list((tmp_path / "run" / "tensorboard").iterdir())
    assert len(files) == 1 and files[0].name.startswith("events.out.tfevents."), files
    logged, rows = scalars(tmp_path / "run"), metrics(tmp_path / "run", drop=set())
    steps = [16, 32]  # 1,000 samples a rank in batches of 64: 16 optimizer steps an epoch
    assert logged["epoch/val_loss"] == [
        (s, pytest.approx(float(r["val_loss"]))) for s, r in zip(steps, rows, strict=True)
    ]
    assert [step for step, _ in logged["step/train_loss"]] == [4, 8, 12, 16, 20, 24, 28, 32]
