"""Nothing is lost in a run: refused nonsense, run folders that are never overwritten, exact resume,
Ctrl-C and kill -9 survived, divergence stopped with its epoch and step; and every fault a user or a
cluster can cause ends in one line, in the scripts, in the generator, and with the user's own data and
model (issue 13). Sections: the generated scripts; resume that checks what it resumes; damaged run
folders; one run per folder; disk errors; signals; early stopping and seeds; the generator; your own
data and model; threads."""

import contextlib
import fcntl
import hashlib
import math
import os
import re
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.helpers import checkpoint, load, metrics, render, run_main, run_script, same_tensors, stop_after
from tests.test_ddp import torchrun

SIX = {"seed": True, "amp": True, "clip": True, "accumulate": True, "lr_plot": True, "early_stop": True}


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """projects[name]: rendered project folders."""
    root = tmp_path_factory.mktemp("faults")
    return {
        "classify": render(root / "classify", "classify", **SIX),
        "gan": render(root / "gan", "gan", gp=True, seed=True, amp=True, early_stop=True),
        "plain": render(root / "plain", "classify"),
        "no-amp": render(root / "no-amp", "classify", **{**SIX, "amp": False}),
        "no-plot": render(root / "no-plot", "classify", **{**SIX, "lr_plot": False}),
        "ddp": render(root / "ddp", "classify", ddp=True, seed=True),
    }


@pytest.fixture(scope="module")
def modules(projects):
    return {name: load(project / "train.py") for name, project in projects.items()}


def hashes(folder):
    """Every file under folder (.tricks/base's too) and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


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


def start(project, *args):
    return subprocess.Popen(
        [sys.executable, "train.py", *map(str, args)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_rows(out_dir, rows, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out_dir / "metrics.csv").exists() and len(metrics(out_dir)) >= rows:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise TimeoutError


# long enough that a signal sent after the first rows always lands mid-run, however busy the machine
# (at 12 epochs, a loaded machine once let the run end before the signal arrived)
EPOCHS = 40
ARGS = ["--epochs", EPOCHS, "--seed", 21, "--patience", 100]


@pytest.fixture(scope="module")
def uninterrupted(projects, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    run_script(projects["classify"], *ARGS, "--out-dir", out, check=True)
    return out


@pytest.mark.slow  # a training script in a process of its own
def test_ctrl_c_saves_prints_the_resume_command_and_exits_130(tmp_path, projects, uninterrupted):
    out = tmp_path / "run"
    process = start(projects["classify"], *ARGS, "--out-dir", out)
    wait_for_rows(out, 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopping after this step" in stderr
    saved = checkpoint(out / "last.pt")["epoch"]
    assert saved == len(metrics(out)) < EPOCHS and f"holds epoch {saved}" in stderr
    command = stderr.strip().splitlines()[-1].split()
    assert command[:2] == ["python", "train.py"] and command[-1] == "--resume" and str(out) in command
    result = run_script(projects["classify"], *command[2:])
    assert result.returncode == 0, result.stderr
    assert metrics(out) == metrics(uninterrupted)
    assert same_tensors(checkpoint(out / "last.pt")["model"], checkpoint(uninterrupted / "last.pt")["model"])


@pytest.mark.slow  # a training script in a process of its own
def test_ctrl_c_twice_stops_at_once_keeping_the_last_epoch(tmp_path, projects):
    out = tmp_path / "run"
    process = start(projects["classify"], *ARGS, "--out-dir", out)
    wait_for_rows(out, 1, process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert checkpoint(out / "last.pt")["epoch"] == len(metrics(out))


@pytest.mark.slow  # a training script in a process of its own
def test_kill_9_at_any_moment_leaves_a_checkpoint_that_resumes(tmp_path, projects, uninterrupted):
    out = tmp_path / "run"
    for rows, delay in [(1, 0.13), (4, 0.27)]:  # two kills, mid-epoch at different moments
        process = start(projects["classify"], *ARGS, "--out-dir", out, *(["--resume"] if rows > 1 else []))
        wait_for_rows(out, rows, process)
        time.sleep(delay)
        process.kill()
        process.communicate()
        saved = torch.load(out / "last.pt", weights_only=False)  # it loads
        assert saved["epoch"] in (len(metrics(out)), len(metrics(out)) - 1)
    result = run_script(projects["classify"], *ARGS, "--out-dir", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert metrics(out) == metrics(uninterrupted)
    assert same_tensors(checkpoint(out / "last.pt")["model"], checkpoint(uninterrupted / "last.pt")["model"])


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


def one_line(err: str) -> str:
    """The last line of stderr, asserting that the output holds no traceback."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


# -----------------------------------------------------------------------------
# resume checks what it resumes


@pytest.fixture(scope="module")
def saved_run(modules, tmp_path_factory):
    """A stopped two-epoch run of the six-trick classify script: (its folder, its arguments)."""
    out = tmp_path_factory.mktemp("saved") / "run"
    args = ["--epochs", 4, "--seed", 8, "--patience", 100]
    run_main(modules["classify"], [*args, "--out-dir", out])
    return out, args


def without_lock(folder):
    return {name: digest for name, digest in hashes(folder).items() if name != ".lock"}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--lr", "0.5"], "--lr 0.003 (now 0.5)"),
        (["--batch-size", "32"], "--batch-size 64 (now 32)"),
        (["--accumulate-steps", "2"], "--accumulate-steps 4 (now 2)"),
        (["--epochs", "6"], "--epochs 4 (now 6)"),  # the schedule's length depends on it
        (["--amp-dtype", "float16"], "--amp-dtype auto (now float16)"),
    ],
)
def test_resume_with_options_that_change_the_run_is_refused(saved_run, modules, capsys, change, named):
    out, args = saved_run
    before = without_lock(out)
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["classify"], [*args, "--out-dir", out, "--resume", *change])
    assert exit_info.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {out / 'last.pt'} was trained with ") and named in line
    assert without_lock(out) == before and checkpoint(out / "last.pt")["args"]["lr"] == 0.003


@pytest.mark.parametrize(
    ("other", "this_one"),
    [("no-amp", "classify with seed, accumulate, clip, early-stop"), ("plain", "classify with no tricks")],
)
def test_resume_by_a_script_with_other_tricks_is_refused(saved_run, modules, capsys, other, this_one):
    out, args = saved_run
    before = without_lock(out)
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules[other], [*(args if other != "plain" else ["--epochs", 4]), "--out-dir", out, "--resume"])
    assert exit_info.value.code == 2
    made_by = "classify with seed, accumulate, amp, clip, early-stop"
    assert f"was made by another script ({made_by}), not this one ({this_one})" in one_line(capsys.readouterr().err)
    assert without_lock(out) == before


def test_a_gan_checkpoint_is_refused_by_a_classify_script(tmp_path, modules, capsys):
    out = tmp_path / "gan"
    run_main(modules["gan"], ["--epochs", 1, "--steps-per-epoch", 2, "--out-dir", out])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["classify"], ["--epochs", 1, "--out-dir", out, "--resume"])
    assert exit_info.value.code == 2
    assert "was made by another script (gan with seed, gp, amp, early-stop)" in one_line(capsys.readouterr().err)


def test_a_checkpoint_of_an_older_script_is_refused(saved_run, modules, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    older = checkpoint(out / "last.pt")
    del older["script"]  # scripts before issue 13 did not record it
    torch.save(older, out / "last.pt")
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["classify"], [*saved_run[1], "--out-dir", out, "--resume"])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: {out / 'last.pt'} was made by an older script, which did not record its tricks; "
        "resume it with that script"
    )


def test_a_trick_that_changes_nothing_and_safe_options_do_not_block_a_resume(saved_run, modules, tmp_path):
    """A run of the script without --lr-plot, resumed by the one with it, on --device cpu with --threads 1:
    it continues exactly."""
    whole, args = saved_run
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        stop_after(modules["no-plot"], patch, epoch=2)
        with pytest.raises(SystemExit):
            run_main(modules["no-plot"], [*args, "--out-dir", out])
    threads = torch.get_num_threads()
    try:
        run_main(modules["classify"], [*args, "--out-dir", out, "--resume", "--device", "cpu", "--threads", 1])
    finally:
        torch.set_num_threads(threads)
    assert metrics(out) == metrics(whole)
    assert same_tensors(checkpoint(out / "last.pt")["model"], checkpoint(whole / "last.pt")["model"])


# -----------------------------------------------------------------------------
# a damaged run folder is a message


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_an_unreadable_last_pt_is_one_line_naming_the_previous_one(saved_run, modules, tmp_path, capsys, damage):
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    data = (out / "last.pt").read_bytes()
    damaged = {"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"\x80\x04junk"}[damage]
    (out / "last.pt").write_bytes(damaged)
    args = saved_run[1]
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["classify"], [*args, "--out-dir", out, "--resume"])
    assert exit_info.value.code == 1
    line = one_line(capsys.readouterr().err)
    prev = out / "last.pt.prev"
    assert line == (
        f"error: {out / 'last.pt'} is unreadable (damaged, or not a checkpoint); copy {prev} (epoch 3) over it "
        "to resume there"
    )
    shutil.copy(prev, out / "last.pt")  # as the message says: the run resumes from epoch 3 and ends as the whole run
    run_main(modules["classify"], [*args, "--out-dir", out, "--resume"])
    assert metrics(out) == metrics(saved_run[0])


def test_a_deleted_metrics_csv_is_recreated_on_resume(saved_run, modules, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    (out / "last.pt").unlink()
    os.rename(out / "last.pt.prev", out / "last.pt")  # epoch 3 of 4
    (out / "metrics.csv").unlink()
    run_main(modules["classify"], [*saved_run[1], "--out-dir", out, "--resume"])
    assert metrics(out) == metrics(saved_run[0])


def test_a_last_row_cut_short_by_a_kill_is_repaired_on_resume(saved_run, modules, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    (out / "last.pt").unlink()
    os.rename(out / "last.pt.prev", out / "last.pt")  # epoch 3 of 4; metrics.csv's epoch-4 row cut in half
    text = (out / "metrics.csv").read_text()
    (out / "metrics.csv").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    run_main(modules["classify"], [*saved_run[1], "--out-dir", out, "--resume"])
    assert metrics(out) == metrics(saved_run[0])


# -----------------------------------------------------------------------------
# one run per folder


@contextlib.contextmanager
def hold_lock(out):
    """Lock the run folder as another live run would (flock locks belong to an open file, not a process)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242\n")
        lock.flush()
        yield


@pytest.mark.parametrize("again", [[], ["--resume"], ["--overwrite"]])
def test_a_folder_in_use_by_another_run_is_refused_untouched(saved_run, modules, tmp_path, capsys, again):
    """[]: a run just begun, nothing saved yet; --resume, --overwrite: a run that is training."""
    out = tmp_path / "run"
    if again:
        shutil.copytree(saved_run[0], out)
    with hold_lock(out):
        before = hashes(out)
        with pytest.raises(SystemExit) as exit_info:
            run_main(modules["classify"], [*saved_run[1], "--out-dir", out, *again])
        assert exit_info.value.code == 2
        assert hashes(out) == before
    assert one_line(capsys.readouterr().err) == (
        f"error: {out} is in use by another run (process 4242); wait for it to end or use another --out-dir"
    )


@pytest.mark.slow  # a training script in a process of its own
def test_a_second_process_is_refused_and_a_killed_run_leaves_no_stale_lock(tmp_path, projects):
    out = tmp_path / "run"
    first = start(projects["plain"], "--epochs", 100000, "--out-dir", out)
    wait_for_rows(out, 1, first)
    second = run_script(projects["plain"], "--epochs", 100000, "--out-dir", out, "--resume")
    assert second.returncode == 2 and f"is in use by another run (process {first.pid})" in one_line(second.stderr)
    first.kill()
    first.communicate()
    with open(out / ".lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the kernel released the killed run's lock


# -----------------------------------------------------------------------------
# disk and permission errors


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


# -----------------------------------------------------------------------------
# signals


@pytest.mark.slow  # a training script in a process of its own
def test_sigterm_saves_prints_the_resume_command_and_exits_143(tmp_path, projects, uninterrupted):
    out = tmp_path / "run"
    process = start(projects["classify"], *ARGS, "--out-dir", out)
    wait_for_rows(out, 1, process)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "Traceback" not in stderr and "SIGTERM: stopping after this step" in stderr
    command = shlex.split(stderr.strip().splitlines()[-1])
    assert command[:2] == ["python", "train.py"] and command[-1] == "--resume"
    assert run_script(projects["classify"], *command[2:]).returncode == 0
    assert metrics(out) == metrics(uninterrupted)


def test_ctrl_c_while_the_lr_plot_is_drawn_stops_after_the_first_step(tmp_path, modules, monkeypatch, capsys):
    module, out = modules["classify"], tmp_path / "run"
    plot = module.plot_lr_schedule

    def ctrl_c_while_drawing(*args):
        module.request_stop(signal.SIGINT, None)
        plot(*args)

    monkeypatch.setattr(module, "plot_lr_schedule", ctrl_c_while_drawing)
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--epochs", 5, "--out-dir", out])
    saved = checkpoint(out / "last.pt")
    assert exit_info.value.code == 130 and saved["epoch"] == 0 and saved["position"]["done"] == 4, "4 micro-batches"
    err = capsys.readouterr().err
    assert "Traceback" not in err and "holds 4 batches of epoch 1. Resume with:" in err


def test_ctrl_c_twice_at_start_up_exits_130_without_a_traceback(tmp_path, modules, monkeypatch, capsys):
    module = modules["classify"]

    def interrupted(*args):
        raise KeyboardInterrupt  # what the second Ctrl-C raises

    monkeypatch.setattr(module, "plot_lr_schedule", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--epochs", 5, "--out-dir", tmp_path / "run"])
    assert exit_info.value.code == 130
    assert one_line(capsys.readouterr().err) == "stopped before the run's first save: nothing was saved"


@pytest.mark.slow  # a training script in a process of its own
@pytest.mark.parametrize("buffered", [False, True])
def test_output_piped_to_head_ends_quietly(tmp_path, projects, buffered):
    """`python train.py | head -n 2`: the reader goes after two lines; the script's next write (a print, or
    the flush of its buffered output at exit) meets a closed pipe, and it ends as `yes | head` does: 141,
    nothing on stderr."""
    unbuffered = {} if buffered else {"PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "train.py", "--epochs", "300", "--out-dir", str(tmp_path / "run")],
        cwd=projects["plain"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, **unbuffered},
    )
    lines = [process.stdout.readline() for _ in range(2)]
    process.stdout.close()  # head exits
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=300) == 141 and stderr == "", stderr
    assert lines[0].startswith(b"training on cpu") and lines[1].startswith(b"[ Valid | 001/300 ]")


# -----------------------------------------------------------------------------
# early stopping, seeds


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
    penalty = module.gradient_penalty(critic, torch.randn(16, 2), torch.randn(16, 2), 10.0, bfloat16)
    assert autocast_on == [False]
    assert penalty.requires_grad and torch.isfinite(penalty)


# -----------------------------------------------------------------------------
# the generator


def tricks_cli(*args, cwd=None):
    """`tricks ARGS` as a user runs it: a process of its own."""
    return subprocess.run(
        [Path(sys.executable).parent / "tricks", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("dest", [".", ""])
def test_new_into_the_empty_folder_you_stand_in_renders_in_place(tmp_path, dest):
    here = tmp_path / "exp"
    here.mkdir()
    here.chmod(0o2750)
    before = here.stat()
    result = tricks_cli("new", dest, "--seed", cwd=here)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "next: python train.py"
    after = here.stat()
    assert (after.st_ino, after.st_mode, after.st_gid) == (before.st_ino, before.st_mode, before.st_gid)
    assert (here / "train.py").is_file() and "tricks new exp --seed" in (here / "train.py").read_text()


def test_force_with_a_folder_where_a_file_goes_changes_nothing(tmp_path):
    dest = tmp_path / "exp"
    assert tricks_cli("new", dest).returncode == 0
    (dest / "README.md").unlink()
    (dest / "README.md").mkdir()  # a folder where the project writes a file
    (dest / "README.md" / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() if p.is_file() else None for p in dest.rglob("*")}
    result = tricks_cli("new", dest, "--force", "--seed")
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"error: {dest / 'README.md'} is a folder where the project writes a file; move it and try again"
    )
    assert {p: p.read_bytes() if p.is_file() else None for p in dest.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"], "no staging folder is left"


def test_force_swaps_the_whole_project_in_one_step(tmp_path, monkeypatch):
    """Until the swap the old project is whole on disk; the swap (renameat2 RENAME_EXCHANGE) is one step; after
    it the new one is whole: a kill -9 at any moment leaves one or the other."""
    from generator import render as rendering
    from generator.options import Options

    dest = tmp_path / "exp"
    rendering.generate(Options.create(), dest)
    (dest / "mine.txt").write_text("kept")
    old = hashes(dest)
    exchange, seen = rendering.exchange, []

    def checked_exchange(a, b):
        seen.append(hashes(b))  # the moment before the swap: dest is the old project, untouched
        exchange(a, b)

    monkeypatch.setattr(rendering, "exchange", checked_exchange)
    rendering.generate(Options.create(seed=True), dest, force=True)
    assert seen == [old]
    assert hashes(dest)["mine.txt"] == old["mine.txt"] and "--seed" in (dest / "train.py").read_text()
    assert (dest / "train.py.bak").read_bytes() != (dest / "train.py").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_the_re_render_command_is_shell_quoted(tmp_path):
    dest = tmp_path / "it's my exp"
    assert tricks_cli("new", dest, "--seed", "--amp").returncode == 0
    header = (dest / ".tricks-answers.yml").read_text().splitlines()[1]
    command = shlex.split(header.removeprefix("#"))
    assert command == ["tricks", "new", "it's my exp", "--force", "--answers", "it's my exp/.tricks-answers.yml"]
    for name in ("README.md", "train.py"):
        assert "tricks new 'it'\"'\"'s my exp' --seed --amp" in (dest / name).read_text()
    again = tricks_cli(*command[1:], cwd=tmp_path)  # pasted in the folder above the project: renders it again
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        (b"seed: true\n\xff\xfe\n", "is not UTF-8 text"),
        (b"1: true\n", "1 is not a name of an answer"),
        (b'_tricks_version: "99.0.0"\nseed: true\n', "was written by torch-tricks 99.0.0, newer than this one"),
        (b'_tricks_version: "next"\n', "_tricks_version 'next' in the answers file is not a version"),
        (b"project_name: ../elsewhere\n", "project_name '../elsewhere' is not a plain folder name"),
        (b"project_name: /etc\n", "project_name '/etc' is not a plain folder name"),
        (b"project_name: ..\n", "project_name '..' is not a plain folder name"),
    ],
)
def test_a_bad_answers_file_is_one_line(tmp_path, answers, message):
    (tmp_path / "answers.yml").write_bytes(answers)
    result = tricks_cli("new", "--answers", tmp_path / "answers.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert message in one_line(result.stderr) and one_line(result.stderr).startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.yml"]


def test_an_error_without_a_strerror_is_one_line(tmp_path, monkeypatch):
    """shutil.Error carries no strerror: its message is used instead."""
    from typer.testing import CliRunner

    from generator import render as rendering
    from generator.cli import app

    dest = tmp_path / "exp"
    assert tricks_cli("new", dest).returncode == 0

    def copy_fails(source, target, **kwargs):
        raise shutil.Error([(source, target, "Input/output error")])

    monkeypatch.setattr(rendering.shutil, "copytree", copy_fails)
    result = CliRunner().invoke(app, ["new", str(dest), "--force"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert one_line(result.stderr).startswith(f"error: cannot write {dest}: ") and "input/output error" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_a_killed_render_leaves_no_staging_folder(tmp_path):
    """SIGTERM while the project renders: the staging folder goes, and the exit code says why."""
    slow_render = (
        "import sys, time\n"
        "from generator import cli, render\n"
        "real = render.render_project\n"
        "def slow(*args):\n"
        "    project = real(*args)\n"
        "    print('rendered', flush=True)\n"
        "    time.sleep(60)\n"
        "    return project\n"
        "render.render_project = slow\n"
        "sys.argv = ['tricks', 'new', sys.argv[1]]\n"
        "cli.main()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", slow_render, str(tmp_path / "exp")], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout.readline() == b"rendered\n"
    assert any(p.name.startswith(".exp.tricks-") for p in tmp_path.iterdir())
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and b"Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_tricks_alone_prints_the_help_and_nothing_else():
    result = tricks_cli()
    assert result.returncode == 2 and result.stderr == ""
    assert result.stdout.startswith("Usage: tricks [OPTIONS] COMMAND") and "error" not in result.stdout


def test_help_shows_no_value_beside_flags_and_created_names_tricks_as_flags(tmp_path):
    help_text = tricks_cli("new", "--help").stdout
    assert "<bool>" not in help_text and "BOOLEAN" not in help_text
    assert "  --lr-plot " in help_text
    result = tricks_cli("new", tmp_path / "exp", "--lr-plot", "--early-stop")
    assert result.stdout.splitlines()[0] == f"created {tmp_path / 'exp'}/ with lr-plot, early-stop (classify)"


# -----------------------------------------------------------------------------
# your own data and model


@pytest.mark.slow  # a training script in a process of its own
def test_plain_data_loaders_of_your_own_work_under_ddp(tmp_path, projects):
    """build_data replaced as the README says, with plain shuffled DataLoaders: under torchrun each of the two
    processes reads half of each dataset, and the run ends as the script's own loaders' would."""
    project = tmp_path / "own"
    shutil.copytree(projects["ddp"], project)
    script = (project / "train.py").read_text()
    own = (
        "_toy_data = build_data\n\n\n"
        "def build_data(args):\n"
        "    train_loader, val_loader = _toy_data(args)\n"
        "    return (\n"
        "        DataLoader(train_loader.dataset, batch_size=args.batch_size, shuffle=True),\n"
        "        DataLoader(val_loader.dataset, batch_size=100),\n"
        "    )\n\n\n"
        "def build_model(args):"
    )
    (project / "train.py").write_text(script.replace("def build_model(args):", own, 1))
    result = torchrun(project, "--epochs", 2, "--out-dir", tmp_path / "run", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(tmp_path / "run")
    assert len(rows) == 2 and float(rows[-1]["val_acc"]) > 0.5


def test_float64_inputs_are_refused_naming_their_dtype(modules, monkeypatch, capsys, tmp_path):
    module = modules["classify"]
    build_data = module.build_data

    def float64_data(args):
        train_loader, val_loader = build_data(args)
        x, y = train_loader.dataset.tensors
        return DataLoader(TensorDataset(x.double(), y), batch_size=args.batch_size), val_loader

    monkeypatch.setattr(module, "build_data", float64_data)
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--out-dir", tmp_path / "run"])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "error: build_data gives torch.float64 inputs, the model's weights are torch.float32: convert them"
    )


def test_float64_real_samples_are_refused_naming_their_dtype(modules, monkeypatch, capsys, tmp_path):
    module = modules["gan"]
    sample_real = module.sample_real
    monkeypatch.setattr(module, "sample_real", lambda n, device: sample_real(n, device).double())
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--out-dir", tmp_path / "run"])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "error: sample_real gives torch.float64 points, the models' weights are torch.float32: convert them"
    )


def test_a_sample_real_of_your_own_sets_the_modes_and_the_plot(tmp_path, modules, monkeypatch, capsys):
    """A 25-Gaussian grid as the README says: sample_real(n, device), CENTRES and STD set to its modes."""
    module = modules["gan"]
    grid = torch.tensor([[x, y] for x in range(-2, 3) for y in range(-2, 3)], dtype=torch.float32)
    monkeypatch.setattr(module, "CENTRES", grid)

    def sample_grid(n, device):
        return (grid[torch.randint(len(grid), (n,))] + 0.02 * torch.randn(n, 2)).to(device)

    monkeypatch.setattr(module, "sample_real", sample_grid)
    run_main(module, ["--epochs", 1, "--steps-per-epoch", 3, "--out-dir", tmp_path / "run"])
    assert re.search(r"modes = \d+/25,", capsys.readouterr().out)
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0


def test_the_sample_plot_spans_the_real_data(tmp_path, modules, monkeypatch):
    """Data ten times the ring's size: the plot's limits follow it (they were fixed to the ring's)."""
    from matplotlib.axes import Axes

    module, limits = modules["gan"], []
    monkeypatch.setattr(module, "sample_real", lambda n, device: 20 * torch.rand(n, 2, device=device) - 10)
    set_axes = Axes.set

    def recording_set(self, **kwargs):
        limits.extend(kwargs[key] for key in ("xlim", "ylim") if key in kwargs)
        return set_axes(self, **kwargs)

    monkeypatch.setattr(Axes, "set", recording_set)
    generator = torch.nn.Linear(2, 2)
    module.plot_samples(generator, torch.randn(500, 2), tmp_path / "samples.png")
    assert len(limits) == 2
    for low, high in limits:
        assert -16 < low < -10 and 10 < high < 16


def test_the_readmes_give_sample_real_its_signature(projects, tmp_path):
    from tests.helpers import ROOT

    gan = render(tmp_path / "gan", "gan", early_stop=True)
    assert "`sample_real(n, device)`" in (gan / "README.md").read_text()
    assert "`sample_real(n, device)`" in (ROOT / "README.md").read_text()
    assert "sample_real(n)" not in (gan / "README.md").read_text() + (ROOT / "README.md").read_text()
    assert "def sample_real(n, device):" in (gan / "train.py").read_text()
    assert "sample_real(args.batch_size, device)" in (gan / "train.py").read_text()


@pytest.mark.slow  # a training script in a process of its own
def test_a_run_that_fails_before_its_first_save_leaves_no_run_folder(tmp_path, projects):
    project = tmp_path / "p"
    shutil.copytree(projects["plain"], project)
    result = run_script(project, "--lr", "1e30", "--epochs", 3)
    assert result.returncode == 1
    assert one_line(result.stderr).endswith("; stopped, nothing was saved")
    assert list((project / "runs").iterdir()) == []


# -----------------------------------------------------------------------------
# threads


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
