"""--ddp: the same train.py as one process and as two (torchrun, gloo on CPU)."""

import json
import os
import shlex
import signal
import subprocess
import sys
import time

import pytest

from tests.goldens import TINY_LM
from tests.helpers import ROOT, checkpoint, max_difference, metrics, render, run_script, same_tensors, scratch_env

pytestmark = pytest.mark.slow  # every test here starts torchrun and two training processes

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "train.py"]


def torchrun(project, *args, timeout=240, env=None):
    """torchrun with two processes in a session of its own: past the timeout the whole session goes, ranks and
    DataLoader workers with torchrun, so that no process of a hung run is left behind."""
    process = subprocess.Popen([*TORCHRUN, *map(str, args)], cwd=project, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env={**scratch_env(project), **(env or {})},
                               start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    return {
        "seed": render(root / "seed", "classify", ddp=True, seed=True),
        "ema": render(root / "ema", "classify", ddp=True, seed=True, ema=True),
        "accumulate": render(root / "accumulate", "classify", ddp=True, seed=True, accumulate=True),
        "six": render(root / "six", "classify", ddp=True, seed=True, amp=True, clip=True, accumulate=True,
                      lr_plot=True, early_stop=True),
        "gan": render(root / "gan", "gan", ddp=True, gp=True, seed=True, early_stop=True, clip=True, accumulate=True),
        "lm": render(root / "lm", "lm", ddp=True, seed=True, accumulate=True, clip=True),
    }  # fmt: skip


def ok(result):
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.mark.parametrize(
    ("project", "options"),
    [
        ("seed", []),
        ("ema", ["--ema-decay", 0.9]),
        ("seed", ["--optimizer", "sgd", "--schedule", "constant", "--weight-decay", 0.05]),
    ],
    ids=["seed", "ema", "sgd-constant"],
)
def test_two_processes_equal_one_with_twice_the_batch(tmp_path, projects, project, options):
    """2 x 25 against 1 x 50: 2,000 samples are a whole number of global batches. With --ema, the average
    (of the unwrapped module, the same on every rank, written by rank 0) matches too; so does a run with
    another optimizer and schedule."""
    common = ["--epochs", 2, "--seed", 9, "--warmup-steps", 5, *options]
    two = ok(torchrun(projects[project], *common, "--batch-size", 25, "--out-dir", tmp_path / "two"))
    ok(run_script(projects[project], *common, "--batch-size", 50, "--out-dir", tmp_path / "one"))
    two_last, one_last = checkpoint(tmp_path / "two" / "last.pt"), checkpoint(tmp_path / "one" / "last.pt")
    for name in ["model", "ema"] if project == "ema" else ["model"]:
        assert max_difference(two_last[name], one_last[name]) < 1e-5, name
    rows_two, rows_one = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    assert len(rows_two) == 2, "rank 0 alone writes metrics.csv"
    for a, b in zip(rows_two, rows_one, strict=False):
        assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5), "validation is all-reduced"
        assert float(a["val_acc"]) == float(b["val_acc"])
    assert two.stdout.count("[ Valid | 001/002 ]") == 1, "rank 0 alone prints"


def test_accumulation_under_ddp_syncs_once_per_step_and_still_matches(tmp_path, projects):
    """2 ranks x 2 micro-batches of 25 against 1 process with K=1 and batches of 100."""
    common = ["--epochs", 2, "--seed", 9, "--warmup-steps", 5]
    ok(
        torchrun(
            projects["accumulate"], *common, "--batch-size", 25, "--accumulate-steps", 2, "--out-dir", tmp_path / "a"
        )
    )
    ok(
        run_script(
            projects["accumulate"], *common, "--batch-size", 100, "--accumulate-steps", 1, "--out-dir", tmp_path / "b"
        )
    )
    assert max_difference(checkpoint(tmp_path / "a" / "last.pt")["model"],
                          checkpoint(tmp_path / "b" / "last.pt")["model"]) < 1e-5  # fmt: skip


@pytest.mark.parametrize(
    ("task", "args", "schedulers"),
    [
        ("classify", ["--epochs", 1, "--batch-size", 50], {"model": "scheduler"}),
        ("gan", ["--epochs", 1, "--steps-per-epoch", 3, "--n-critic", 2],
         {"critic": "critic_scheduler", "generator": "generator_scheduler"}),
    ],
)  # fmt: skip
def test_accumulation_all_reduces_gradients_once_per_optimizer_step(tmp_path, task, args, schedulers):
    """With 3 micro-batches per step, DDP all-reduces each model's gradients once per optimizer step
    (no_sync on the others), not once per micro-batch. Counted by a communication hook."""
    project = render(tmp_path / task, task, ddp=True, accumulate=True, gp=task == "gan")
    argv = [*args, "--accumulate-steps", 3, "--out-dir", tmp_path / "run"]
    counted = subprocess.run(
        [sys.executable, "-m", "tests.count_all_reduces", str(project), *map(str, argv)],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert counted.returncode == 0, counted.stderr[-3000:]
    saved = checkpoint(tmp_path / "run" / "last.pt")
    optimizer_steps = {name: saved[scheduler]["last_epoch"] for name, scheduler in schedulers.items()}
    assert json.loads(counted.stdout.splitlines()[-1]) == optimizer_steps and min(optimizer_steps.values()) >= 3


def test_no_ddp_wrapper_is_left_for_interpreter_shutdown(tmp_path, projects):
    """The wrapper sits in a reference cycle after the run (it is alive after main with automatic collection
    off); the script collects it at exit, before Python shuts down and frees it at a moment that can abort."""
    harness = ["-m", "tests.ddp_alive_at_exit", str(projects["six"]), "--epochs", "1", "--out-dir", str(tmp_path)]
    # torchrun's launcher, with this harness in place of train.py
    result = subprocess.run([*TORCHRUN[:-1], *harness], cwd=ROOT, capture_output=True, text=True, timeout=240,
                            check=False, env=scratch_env(tmp_path))  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    counts = [line for line in result.stderr.splitlines() if line.startswith("DDP alive")]
    assert counts == ["DDP alive: 1 after main, 0 after the atexit functions"] * 2, result.stderr[-3000:]


def test_a_run_without_out_dir_makes_one_folder_for_all_ranks(projects):
    ok(torchrun(projects["six"], "--epochs", 2))
    runs = sorted(p.name for p in (projects["six"] / "runs").iterdir())
    assert runs == ["001"]
    assert [row["epoch"] for row in metrics(projects["six"] / "runs" / "001")] == ["1", "2"]


def test_early_stopping_ends_every_rank(tmp_path, projects):
    result = ok(torchrun(projects["six"], "--epochs", 50, "--patience", 1, "--min-delta", 10, "--out-dir", tmp_path,
                         timeout=120))  # fmt: skip
    assert "stopping early" in result.stdout
    assert len(metrics(tmp_path)) == 2  # epoch 1 is the best, epoch 2 does not beat it by 10
    assert checkpoint(tmp_path / "best.pt")["epoch"] == 1


def test_resume_under_torchrun_equals_the_uninterrupted_run(tmp_path, projects):
    # 30 epochs: the Ctrl-C sent after row 2 lands mid-run however busy the machine (at 6, a loaded machine
    # once let the run end first)
    args = ["--epochs", 30, "--seed", 3, "--patience", 100]
    ok(torchrun(projects["six"], *args, "--out-dir", tmp_path / "whole"))
    out = tmp_path / "cut"
    process = subprocess.Popen([*TORCHRUN, *map(str, args), "--out-dir", str(out)], cwd=projects["six"],
                               env=scratch_env(projects["six"]), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               start_new_session=True)  # fmt: skip
    deadline = time.time() + 120
    while not ((out / "metrics.csv").exists() and len(metrics(out)) >= 2):
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal reaches torchrun and every rank
    _, stderr = process.communicate(timeout=120)
    saved = checkpoint(out / "last.pt")["epoch"]
    assert 2 <= saved < 30 and len(checkpoint(out / "last.pt")["rng"]) == 2, "every rank's random streams"
    # the resume command it printed is torchrun's, on as many processes
    lines = stderr.decode().splitlines()  # torchrun's own traceback for the signal follows the script's lines
    command = shlex.split(lines[lines.index(next(line for line in lines if line.endswith("Resume with:"))) + 1])
    assert command[:5] == ["torchrun", "--standalone", "--nproc_per_node", "2", "train.py"], stderr.decode()
    assert command[5:] == [*map(str, args), "--out-dir", str(out), "--resume"]
    ok(torchrun(projects["six"], *command[5:]))
    assert metrics(out) == metrics(tmp_path / "whole")
    assert same_tensors(checkpoint(out / "last.pt")["model"], checkpoint(tmp_path / "whole" / "last.pt")["model"])


def test_resume_on_another_number_of_processes_is_refused(tmp_path, projects):
    ok(torchrun(projects["six"], "--epochs", 1, "--out-dir", tmp_path))
    result = run_script(projects["six"], "--epochs", 1, "--out-dir", tmp_path, "--resume")
    assert result.returncode == 2 and "ran on 2 processes; resume it on as many" in result.stderr
    assert "Traceback" not in result.stderr


def test_bfloat16_amp_under_ddp(tmp_path, projects):
    """2 x 8 against 1 x 16 in bfloat16, with every classifier trick: the same run but for bfloat16's rounding,
    which depends on the batch's shape (the losses agree to 1e-3, the weights to 1e-2; a rank that trained on its
    half alone would be 0.1 off)."""
    common = ["--epochs", 2, "--seed", 9, "--warmup-steps", 5, "--patience", 100, "--amp-dtype", "bfloat16"]
    ok(torchrun(projects["six"], *common, "--batch-size", 8, "--out-dir", tmp_path / "two"))
    ok(run_script(projects["six"], *common, "--batch-size", 16, "--out-dir", tmp_path / "one"))
    two, one = metrics(tmp_path / "two"), metrics(tmp_path / "one")
    for a, b in zip(two, one, strict=True):
        for column in ("train_loss", "val_loss", "grad_norm"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-3), column
    weights = [checkpoint(tmp_path / run / "last.pt")["model"] for run in ("two", "one")]
    assert max_difference(*weights) < 1e-2


def test_the_gan_on_two_processes_equals_one_with_twice_the_batch(tmp_path, projects):
    """WGAN-GP with accumulation and clipping, 2 x 16 against 1 x 32: every rank draws a step's whole batch from
    the same seed and trains on its part, so the two runs see the same samples, noise and mixing weights (SGD, as
    in test_gan_runs: Adam would turn the penalty's rounding into larger steps)."""
    common = ["--epochs", 2, "--steps-per-epoch", 5, "--n-critic", 2, "--seed", 9, "--accumulate-steps", 2,
              "--optimizer", "sgd"]  # fmt: skip
    ok(torchrun(projects["gan"], *common, "--batch-size", 16, "--out-dir", tmp_path / "two"))
    ok(run_script(projects["gan"], *common, "--batch-size", 32, "--out-dir", tmp_path / "one"))
    two, one = checkpoint(tmp_path / "two" / "last.pt"), checkpoint(tmp_path / "one" / "last.pt")
    for name in ("generator", "critic"):
        assert max_difference(two[name], one[name]) < 1e-5, name
    for a, b in zip(metrics(tmp_path / "two"), metrics(tmp_path / "one"), strict=True):
        for column in ("critic_loss", "generator_loss", "critic_grad_norm"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-4, abs=1e-6), column


def test_the_gan_under_ddp(tmp_path, projects):
    ok(torchrun(projects["gan"], "--epochs", 2, "--steps-per-epoch", 10, "--out-dir", tmp_path))
    rows = metrics(tmp_path)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert {"critic_grad_norm", "wasserstein", "gp"} <= set(rows[0])
    assert (tmp_path / "samples.png").exists() and checkpoint(tmp_path / "best.pt")["epoch"] in (1, 2)


def test_the_language_model_on_two_processes_equals_one_with_twice_the_batch(tmp_path, projects):
    """2 x 4 windows against 1 x 8, each step 2 micro-batches: every rank draws the global batch's offsets from
    the same generator and trains on its share; validation windows are shared out and the scores all-reduced."""
    common = [*TINY_LM, "--epochs", 2, "--steps-per-epoch", 5, "--seed", 9, "--accumulate-steps", 2]
    two = ok(torchrun(projects["lm"], *common, "--batch-size", 4, "--out-dir", tmp_path / "two"))
    ok(run_script(projects["lm"], *common, "--batch-size", 8, "--out-dir", tmp_path / "one"))
    two_last, one_last = checkpoint(tmp_path / "two" / "last.pt"), checkpoint(tmp_path / "one" / "last.pt")
    assert max_difference(two_last["model"], one_last["model"]) < 1e-5
    for a, b in zip(metrics(tmp_path / "two"), metrics(tmp_path / "one"), strict=True):
        for column in ("train_loss", "val_loss", "grad_norm"):
            assert float(a[column]) == pytest.approx(float(b[column]), rel=1e-5), column
    assert two.stdout.count("[ Valid | 002/002 ]") == 1 and two.stdout.count("the sample after epoch 2:") == 1, (
        "rank 0 alone prints"
    )
    assert (tmp_path / "two" / "samples.txt").read_text().count("epoch ") == 2
