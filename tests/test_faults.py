"""Nothing is lost in a run: refused nonsense, run folders that are never overwritten, exact resume,
Ctrl-C and kill -9 survived, divergence stopped with its epoch and step."""

import hashlib
import signal
import subprocess
import sys
import threading
import time

import pytest
import torch
from torch.utils.data import DataLoader

from tests.helpers import checkpoint, load, metrics, render, run_main, run_script, same_tensors

SIX = {"seed": True, "amp": True, "clip": True, "accumulate": True, "lr_plot": True, "early_stop": True}


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """projects[name]: rendered project folders."""
    root = tmp_path_factory.mktemp("faults")
    return {
        "classify": render(root / "classify", "classify", **SIX),
        "gan": render(root / "gan", "gan", gp=True, seed=True, amp=True, early_stop=True),
        "plain": render(root / "plain", "classify"),
    }


@pytest.fixture(scope="module")
def modules(projects):
    return {name: load(project / "train.py") for name, project in projects.items()}


def hashes(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


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


def stop_after(module, monkeypatch, epoch):
    """Ctrl-C during `epoch`: the script finishes it, saves, and exits with 130."""
    train_one_epoch = module.train_one_epoch
    epochs = []

    def train_then_stop(*args):
        metrics = train_one_epoch(*args)
        epochs.append(1)
        if len(epochs) == epoch:
            module.STOP.append(signal.SIGINT)
        return metrics

    monkeypatch.setattr(module, "train_one_epoch", train_then_stop)


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
    """build_data replaced by a user's loader that shuffles with torch's generator, not one of its own."""
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
    assert checkpoint(tmp_path / "cut" / "last.pt")["rng"]["loader"] is None
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


ARGS = ["--epochs", 12, "--seed", 21, "--patience", 100]


@pytest.fixture(scope="module")
def uninterrupted(projects, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    run_script(projects["classify"], *ARGS, "--out-dir", out, check=True)
    return out


def test_ctrl_c_saves_prints_the_resume_command_and_exits_130(tmp_path, projects, uninterrupted):
    out = tmp_path / "run"
    process = start(projects["classify"], *ARGS, "--out-dir", out)
    wait_for_rows(out, 2, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopping after this epoch" in stderr
    saved = checkpoint(out / "last.pt")["epoch"]
    assert saved == len(metrics(out)) < 12 and f"holds epoch {saved}" in stderr
    command = stderr.strip().splitlines()[-1].split()
    assert command[:2] == ["python", "train.py"] and command[-1] == "--resume" and str(out) in command
    result = run_script(projects["classify"], *command[2:])
    assert result.returncode == 0, result.stderr
    assert metrics(out) == metrics(uninterrupted)
    assert same_tensors(checkpoint(out / "last.pt")["model"], checkpoint(uninterrupted / "last.pt")["model"])


def test_ctrl_c_twice_stops_at_once_keeping_the_last_epoch(tmp_path, projects):
    out = tmp_path / "run"
    process = start(projects["classify"], *ARGS, "--out-dir", out)
    wait_for_rows(out, 1, process)
    process.send_signal(signal.SIGINT)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130 and "Traceback" not in stderr
    assert checkpoint(out / "last.pt")["epoch"] == len(metrics(out))


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
