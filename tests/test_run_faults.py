"""Nothing is lost in a run: refused nonsense, run folders that are never overwritten, exact resume, files
written in order, divergence stopped with its epoch and step, disk errors in one line, early stopping,
seeds and threads."""

import math
import os
import resource
import subprocess
import sys
import threading

import pytest
import torch
from torch.utils.data import DataLoader

from tests.faults import hashes, one_line
from tests.helpers import checkpoint, metrics, run_main, run_script, same_tensors, stop_after


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--epochs", "0"], "argument --epochs: must be a number >= 1"),
        (["--batch-size", "0"], "argument --batch-size"),
        (["--accumulate-steps", "0"], "argument --accumulate-steps"),
        (["--lr", "0"], "argument --lr: must be a number > 0"),
        (["--lr", "-1e-3"], "argument --lr"),
        (["--lr", "nan"], "argument --lr"),
        (["--patience", "-1"], "argument --patience"),
        (["--clip-norm", "0"], "argument --clip-norm"),
        (["--clip-value", "-2"], "argument --clip-value"),
        (["--epochs", "ten"], "argument --epochs: invalid int value: 'ten'"),
        (["--clip-norm", "1", "--clip-value", "1"], "not allowed with argument"),
        (["--resume"], "--resume needs --out-dir"),
        (["--amp-dtype", "float8"], "invalid choice"),
    ],
)
def test_argparse_refuses_nonsense(modules, capsys, args, message):
    with pytest.raises(SystemExit) as exit_info:
        modules["classify"].parse_args(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_a_refusal_from_the_command_line_is_argparse_s_own(projects):
    result = run_script(projects["classify"], "--epochs", "0")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.startswith("usage: train.py") and "error: argument --epochs" in result.stderr


def test_each_run_gets_a_new_numbered_folder(tmp_path, monkeypatch, modules):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):
        run_main(modules["plain"], ["--epochs", 1])
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["001", "002"]
    assert len(metrics(tmp_path / "runs" / "002")) == 1


def test_an_out_dir_holding_a_run_is_refused_untouched(tmp_path, modules, capsys):
    out = tmp_path / "run"
    run_main(modules["plain"], ["--epochs", 1, "--out-dir", out])
    before = hashes(out)
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["plain"], ["--epochs", 1, "--out-dir", out])
    assert exit_info.value.code == 2
    assert "holds a run: add --resume to continue it, or --overwrite" in capsys.readouterr().err
    assert hashes(out) == before


def test_overwrite_starts_afresh(tmp_path, modules):
    out = tmp_path / "run"
    run_main(modules["plain"], ["--epochs", 2, "--out-dir", out])
    run_main(modules["plain"], ["--epochs", 1, "--out-dir", out, "--overwrite"])
    assert [row["epoch"] for row in metrics(out)] == ["1"]
    assert checkpoint(out / "last.pt")["epoch"] == 1


def test_resume_without_a_checkpoint_is_refused(tmp_path, modules, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["plain"], ["--out-dir", tmp_path / "empty", "--resume"])
    assert exit_info.value.code == 2 and "nothing to resume" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("classify", ["--epochs", 5, "--seed", 11, "--patience", 100]),
        ("gan", ["--epochs", 4, "--steps-per-epoch", 10, "--seed", 11]),
    ],
)
def test_resume_equals_the_uninterrupted_run(tmp_path, modules, monkeypatch, capsys, name, args):
    module = modules[name]
    whole = run_main(module, [*args, "--out-dir", tmp_path / "whole"])
    with monkeypatch.context() as patch:
        stop_after(module, patch, epoch=2)
        with pytest.raises(SystemExit) as exit_info:
            run_main(module, [*args, "--out-dir", tmp_path / "cut"])
    assert exit_info.value.code == 130
    err = capsys.readouterr().err
    assert "holds epoch 2" in err and "--resume" in err
    assert len(metrics(tmp_path / "cut")) == 2
    resumed = run_main(module, [*args, "--out-dir", tmp_path / "cut", "--resume"])
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole"), "rows appended, equal to the whole run's"
    whole_state = whole.state_dict() if name == "classify" else whole[0].state_dict()
    resumed_state = resumed.state_dict() if name == "classify" else resumed[0].state_dict()
    assert same_tensors(whole_state, resumed_state)


def test_a_data_loader_of_your_own_without_a_generator_resumes_exactly(tmp_path, modules, monkeypatch):
    """build_data replaced by a user's loader that shuffles with torch's generator, not one of its own: the script
    reads it in an order of the run's own (EpochOrder), kept in last.pt."""
    module, args = modules["classify"], ["--epochs", 4, "--seed", 7, "--patience", 100]
    build_data = module.build_data

    def own_loaders(args):
        train_loader, val_loader = build_data(args)
        return DataLoader(train_loader.dataset, batch_size=args.batch_size, shuffle=True), val_loader

    monkeypatch.setattr(module, "build_data", own_loaders)
    whole = run_main(module, [*args, "--out-dir", tmp_path / "whole"])
    with monkeypatch.context() as patch:
        stop_after(module, patch, epoch=2)
        with pytest.raises(SystemExit):
            run_main(module, [*args, "--out-dir", tmp_path / "cut"])
    assert "data_order" in checkpoint(tmp_path / "cut" / "last.pt"), "the order is the run's own, saved"
    resumed = run_main(module, [*args, "--out-dir", tmp_path / "cut", "--resume"])
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")
    assert same_tensors(whole.state_dict(), resumed.state_dict())


def test_resume_forgets_a_row_written_after_the_last_checkpoint(tmp_path, modules, monkeypatch):
    """kill -9 between writing an epoch's row and its last.pt: resume repeats that epoch once."""
    module, args = modules["classify"], ["--epochs", 4, "--seed", 5, "--patience", 100]
    run_main(module, [*args, "--out-dir", tmp_path / "whole"])
    with monkeypatch.context() as patch:
        stop_after(module, patch, epoch=2)
        with pytest.raises(SystemExit):
            run_main(module, [*args, "--out-dir", tmp_path / "cut"])
    epoch_3 = (tmp_path / "whole" / "metrics.csv").read_text().splitlines()[3]
    with open(tmp_path / "cut" / "metrics.csv", "a") as f:
        f.write(epoch_3 + "\n")
    run_main(module, [*args, "--out-dir", tmp_path / "cut", "--resume"])
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")


@pytest.mark.slow  # a training script in a process of its own
def test_a_diverging_run_stops_naming_epoch_and_step(tmp_path, projects):
    result = run_script(projects["plain"], "--lr", "1e30", "--epochs", 3, "--out-dir", tmp_path / "run")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: epoch 1: the loss is" in result.stderr and "at step" in result.stderr


def test_files_are_written_in_order_on_the_writer_thread_and_complete_when_the_run_ends(tmp_path, modules, monkeypatch):
    module, out = modules["classify"], tmp_path / "run"
    write_atomic, append_metrics = module.write_atomic, module.append_metrics
    writes = []  # (file, the thread that wrote it)

    def record(write, path, *data):
        writes.append((path.name, threading.current_thread()))
        write(path, *data)

    monkeypatch.setattr(module, "write_atomic", lambda path, *data: record(write_atomic, path, *data))
    monkeypatch.setattr(module, "append_metrics", lambda path, row: record(append_metrics, path, row))
    run_main(module, ["--epochs", 4, "--seed", 3, "--patience", 100, "--out-dir", out])
    assert writes[0] == ("run.json", threading.main_thread()), "what the run is, once, before it trains"
    writes = writes[1:]
    assert all(thread is not threading.main_thread() for _, thread in writes)
    names = [name for name, _ in writes]
    assert [name for name in names if name != "best.pt"] == ["metrics.csv", "last.pt"] * 4, "a row, then its last.pt"
    assert names.index("best.pt") < names.index("metrics.csv"), "an epoch's best.pt comes before its last.pt"
    # the run returned: every file is complete and holds the last epoch
    assert checkpoint(out / "last.pt")["epoch"] == 4 and len(metrics(out)) == 4
    assert not any(out.glob("*.tmp"))


def test_a_failed_write_stops_the_run_in_one_line_keeping_the_last_good_epoch(tmp_path, modules, monkeypatch, capsys):
    module, out = modules["classify"], tmp_path / "run"
    args = ["--epochs", 6, "--seed", 4, "--patience", 100]
    write_atomic = module.write_atomic

    def disk_full_at_epoch_2(path, data, keep_previous=False):
        if path.name == "last.pt" and len(metrics(out)) == 2:
            raise OSError(28, "No space left on device")
        write_atomic(path, data, keep_previous)

    with monkeypatch.context() as patch:
        patch.setattr(module, "write_atomic", disk_full_at_epoch_2)
        with pytest.raises(SystemExit) as exit_info:
            run_main(module, [*args, "--out-dir", out])
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"error: epoch 2: cannot write {out / 'last.pt'}: No space left on device; " + (
        f"{out / 'last.pt'} keeps epoch 1"
    )
    assert checkpoint(out / "last.pt")["epoch"] == 1, "the last good checkpoint is kept"
    assert not any(out.glob("*.tmp"))
    assert len(metrics(out)) == 2, "the failed epoch's row is on disk; no later epoch's"
    run_main(module, [*args, "--out-dir", out, "--resume"])  # resume drops the row last.pt does not keep
    run_main(module, [*args, "--out-dir", tmp_path / "whole"])
    assert metrics(out) == metrics(tmp_path / "whole")


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, modules, monkeypatch, capsys):
    module, out = modules["plain"], tmp_path / "run"
    train_one_epoch = module.train_one_epoch
    calls = []

    def diverge_in_epoch_3(*args):
        calls.append(1)
        if len(calls) == 3:
            raise FloatingPointError("the loss is nan at step 7")
        return train_one_epoch(*args)

    monkeypatch.setattr(module, "train_one_epoch", diverge_in_epoch_3)
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--epochs", 5, "--out-dir", out])
    assert exit_info.value.code == 1
    last = f"error: epoch 3: the loss is nan at step 7; stopped, {out / 'last.pt'} keeps epoch 2"
    assert capsys.readouterr().err.strip().splitlines()[-1] == last
    assert checkpoint(out / "last.pt")["epoch"] == 2
    assert len(metrics(out)) == 2


def test_an_out_dir_that_is_a_file_is_refused(tmp_path, modules, capsys):
    (tmp_path / "taken").write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["plain"], ["--out-dir", tmp_path / "taken"])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == f"error: {tmp_path / 'taken'} is a file, not a folder"
    assert (tmp_path / "taken").read_text() == "mine"


def test_an_out_dir_that_cannot_be_made_is_one_line(tmp_path, modules, capsys):
    (tmp_path / "file").write_text("x")
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["plain"], ["--out-dir", tmp_path / "file" / "run"])
    assert exit_info.value.code == 1
    assert one_line(capsys.readouterr().err).startswith(f"error: cannot write in {tmp_path / 'file' / 'run'}: ")


def file_size_limit(size):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))


@pytest.mark.slow  # a training script in a process of its own
def test_a_file_size_limit_stops_the_run_in_one_line_and_leaves_nothing_behind(tmp_path, projects):
    """ulimit -f: metrics.csv fits, last.pt does not; no epoch is saved, so the run's new folder goes."""
    out = tmp_path / "run"
    result = run_script(projects["plain"], "--epochs", 3, "--out-dir", out, preexec_fn=file_size_limit(4096))
    assert result.returncode == 1
    line = one_line(result.stderr)
    assert line == f"error: epoch 1: cannot write {out / 'last.pt'}: File too large; nothing was saved"
    assert not out.exists(), "a run folder with nothing saved is removed"


@pytest.mark.slow  # a training script in a process of its own
def test_a_write_error_in_a_resumed_run_names_the_epoch_last_pt_keeps(tmp_path, projects):
    out = tmp_path / "run"
    assert run_script(projects["plain"], "--epochs", 3, "--out-dir", out).returncode == 0
    os.replace(out / "last.pt.prev", out / "last.pt")  # epoch 2 of 3
    limited = run_script(
        projects["plain"], "--epochs", 3, "--out-dir", out, "--resume", preexec_fn=file_size_limit(4096)
    )
    assert limited.returncode == 1
    line = one_line(limited.stderr)
    assert line == f"error: epoch 3: cannot write {out / 'last.pt'}: File too large; {out / 'last.pt'} keeps epoch 2"
    assert checkpoint(out / "last.pt")["epoch"] == 2 and not any(out.glob("*.tmp"))


@pytest.mark.parametrize(
    ("losses", "stops_after"),
    [([5, 4, 3, 2, 1], None), ([5, 4, 4, 3, 2], 3), ([5, 6, 4, 3, 2], 2)],
)
def test_patience_0_stops_at_the_first_epoch_without_improvement(modules, losses, stops_after):
    stopping = modules["classify"].EarlyStopping("val_loss", patience=0, min_delta=0.0)
    for epoch, loss in enumerate(losses, 1):
        stopping.step(loss, epoch)
        if stopping.should_stop:
            break
    assert (epoch if stopping.should_stop else None) == stops_after


def test_patience_0_trains_every_epoch_of_a_run_that_keeps_improving(tmp_path, modules, monkeypatch):
    module = modules["classify"]
    evaluate, epochs = module.evaluate, []

    def always_better(*args):
        epochs.append(1)
        return {**evaluate(*args), "val_loss": 10.0 - len(epochs)}

    monkeypatch.setattr(module, "evaluate", always_better)
    run_main(module, ["--epochs", 4, "--patience", 0, "--out-dir", tmp_path / "run"])
    assert len(metrics(tmp_path / "run")) == 4


def test_a_non_finite_monitored_metric_stops_the_run_with_a_message(tmp_path, modules, monkeypatch, capsys):
    module, out = modules["classify"], tmp_path / "run"
    evaluate, epochs = module.evaluate, []

    def nan_in_epoch_2(*args):
        epochs.append(1)
        return {**evaluate(*args), **({"val_loss": math.nan} if len(epochs) == 2 else {})}

    monkeypatch.setattr(module, "evaluate", nan_in_epoch_2)
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--epochs", 4, "--out-dir", out])
    assert exit_info.value.code == 1
    assert one_line(capsys.readouterr().err) == (
        f"error: epoch 2: the monitored val_loss is nan; stopped, {out / 'last.pt'} keeps epoch 1"
    )


@pytest.mark.parametrize("seed", ["-1", str(2**32), "1e3"])
def test_a_seed_outside_32_bits_is_refused_by_argparse(modules, capsys, seed):
    with pytest.raises(SystemExit) as exit_info:
        modules["classify"].parse_args(["--seed", seed])
    assert exit_info.value.code == 2 and "argument --seed" in capsys.readouterr().err
    assert modules["classify"].parse_args(["--seed", str(2**32 - 1)]).seed == 2**32 - 1


def test_the_penalty_s_gradient_is_taken_outside_autocast(modules, monkeypatch):
    module = modules["gan"]
    grad, autocast_on = torch.autograd.grad, []

    def recording_grad(*args, **kwargs):
        autocast_on.append(torch.is_autocast_enabled("cpu"))
        return grad(*args, **kwargs)

    monkeypatch.setattr(module.torch.autograd, "grad", recording_grad)
    critic = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    bfloat16 = torch.autocast("cpu", dtype=torch.bfloat16)
    penalty = module.gradient_penalty(critic, torch.randn(16, 2), torch.randn(16, 2), torch.rand(16, 1), 10.0, bfloat16)
    assert autocast_on == [False]
    assert penalty.requires_grad and torch.isfinite(penalty)


def test_threads_sets_torch_s_threads(tmp_path, modules):
    threads = torch.get_num_threads()
    try:
        run_main(modules["plain"], ["--epochs", 1, "--threads", 2, "--out-dir", tmp_path / "run"])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)


def test_the_suite_runs_its_scripts_on_one_thread(projects):
    assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    probe = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.get_num_threads())"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "1"
