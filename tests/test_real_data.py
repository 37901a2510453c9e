"""Real data keeps every promise: a dataset that draws random augmentation in __getitem__, read by DataLoader
workers, gives the same run whatever --num-workers, resumes bit-identical after a signal to the whole process
group at any step of any epoch, and a resume mid-epoch loads none of the samples it skips."""

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.helpers import checkpoint, max_difference, metrics, render, run_script, same_tensors, scratch_env
from tests.real_data import edit
from tests.test_ddp import TORCHRUN, ok, torchrun

pytestmark = pytest.mark.slow  # each test runs the edited script in processes of its own

COMMON = ["--epochs", 3, "--seed", 5, "--threads", 1]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    return edit(render(tmp_path_factory.mktemp("real") / "p", "classify", seed=True))


@pytest.fixture(scope="module")
def uninterrupted(project, tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted") / "run"
    ok(run_script(project, *COMMON, "--num-workers", 2, "--out-dir", out))
    return out


def test_the_number_of_workers_changes_nothing(project, uninterrupted, tmp_path):
    ok(run_script(project, *COMMON, "--num-workers", 0, "--out-dir", tmp_path / "w0"))
    assert same_tensors(
        checkpoint(tmp_path / "w0" / "last.pt")["model"], checkpoint(uninterrupted / "last.pt")["model"]
    )
    assert metrics(tmp_path / "w0") == metrics(uninterrupted)


def start_in_group(project, loads, *args):
    """The script in a process group of its own, as a scheduler's job is: its DataLoader workers join the group."""
    return subprocess.Popen(
        [sys.executable, "train.py", *map(str, args)], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, start_new_session=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", "SLOW": "0.0005", "LOADS": str(loads)},
    )  # fmt: skip


def wait_for_loads(process, loads, count, timeout=120):
    """Until the workers have loaded `count` training samples (the run's own count of where it is)."""
    deadline = time.monotonic() + timeout
    while not (loads.exists() and loads.read_text().count("\n") >= count):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended or hung first"
        time.sleep(0.01)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1], ids=["TERM", "INT", "USR1"])
def test_a_signal_to_the_whole_group_in_epoch_2_stops_and_resumes_exactly(project, uninterrupted, tmp_path, signum):
    """Sent to every process of the job (the workers too) once 10 batches of epoch 2 are loaded: the run stops at a
    step of epoch 2 with one message and the signal's exit code, and the resume ends bit-identical to the run
    never stopped."""
    out = tmp_path / "run"
    process = start_in_group(project, tmp_path / "loads", *COMMON, "--num-workers", 2, "--out-dir", out)
    try:
        wait_for_loads(process, tmp_path / "loads", 2000 + 10 * 64)
        os.killpg(process.pid, signum)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signum, stderr[-3000:]
    assert stderr.count("stopping after this step") == 1, stderr
    assert "Traceback" not in stderr and "exited unexpectedly" not in stderr, stderr
    saved = checkpoint(out / "last.pt")
    assert saved["epoch"] == 1 and saved["position"] is not None, "stopped within epoch 2, saved there"
    ok(run_script(project, *COMMON, "--num-workers", 2, "--out-dir", out, "--resume"))
    assert same_tensors(checkpoint(out / "last.pt")["model"], checkpoint(uninterrupted / "last.pt")["model"])
    assert metrics(out) == metrics(uninterrupted)


def test_a_resume_mid_epoch_loads_none_of_the_samples_it_skips(project, tmp_path):
    """Saved after 27 of epoch 2's 32 batches (--save-every-steps 59: 32 + 27), that save resumed: the epoch
    loads the 2000 - 27 x 64 = 272 samples it had not trained on, each once, and ends as the run did. (Before,
    the resumed run loaded the 27 batches again to skip them: 1,728 loads more.)"""
    out, loads = tmp_path / "run", tmp_path / "loads"
    args = [*COMMON, "--epochs", 2, "--num-workers", 2, "--save-every-steps", 59, "--out-dir", out]
    ok(run_script(project, *args))
    finished = checkpoint(out / "last.pt")
    os.replace(out / "last.pt.prev", out / "last.pt")  # the save at step 59
    assert checkpoint(out / "last.pt")["position"]["done"] == 27
    ok(run_script(project, *args, "--resume", env={"LOADS": str(loads)}))
    checked, *loaded = [int(index) for index in loads.read_text().split()]
    assert checked == 0, "check_inputs reads one sample"
    assert len(loaded) == len(set(loaded)) == 2000 - 27 * 64
    assert same_tensors(checkpoint(out / "last.pt")["model"], finished["model"])


def test_two_ranks_draw_their_own_augmentation_and_equal_one_process_with_twice_the_batch(tmp_path):
    """Under torchrun each rank loads its share with each sample's own random streams: 2 x 25 samples with
    augmentation equal 1 x 50 (before, both ranks drew the same augmentation for their k-th samples)."""
    project = edit(render(tmp_path / "p", "classify", ddp=True, seed=True), batch_norm=False)
    common = ["--epochs", 2, "--seed", 9, "--warmup-steps", 5, "--num-workers", 2]
    ok(torchrun(project, *common, "--batch-size", 25, "--out-dir", tmp_path / "two"))
    ok(run_script(project, *common, "--batch-size", 50, "--out-dir", tmp_path / "one"))
    two, one = checkpoint(tmp_path / "two" / "last.pt"), checkpoint(tmp_path / "one" / "last.pt")
    assert max_difference(two["model"], one["model"]) < 1e-5


def test_under_torchrun_a_signal_to_the_whole_group_with_workers_stops_and_resumes_exactly(tmp_path):
    """torchrun, 2 ranks, each with 2 DataLoader workers; SIGTERM to every process of the job in epoch 2: the
    ranks stop at one step with one message (rank 0's), the workers ignore it; the same command resumes to the
    uninterrupted run's weights."""
    project = edit(render(tmp_path / "p", "classify", ddp=True, seed=True), batch_norm=False)
    common = ["--epochs", 3, "--seed", 9, "--batch-size", 32, "--num-workers", 2]
    ok(torchrun(project, *common, "--out-dir", tmp_path / "whole"))
    out, loads = tmp_path / "run", tmp_path / "loads"
    process = subprocess.Popen(
        [*TORCHRUN, *map(str, [*common, "--out-dir", out])], cwd=project, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**scratch_env(project), "PYTHONUNBUFFERED": "1", "SLOW": "0.0005", "LOADS": str(loads)},
    )  # fmt: skip
    try:
        wait_for_loads(process, loads, 2 + 2000 + 10 * 64)  # each rank's check_inputs, epoch 1, then 10 batches
        os.killpg(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "exited unexpectedly" not in stderr and 'train.py", line' not in stderr, stderr[-3000:]
    assert stderr.count("SIGTERM: stopping after this step") == 1, stderr[-3000:]
    saved = checkpoint(out / "last.pt")
    assert saved["epoch"] == 1 and saved["position"] is not None, "stopped within epoch 2"
    ok(torchrun(project, *common, "--out-dir", out, "--resume"))
    assert same_tensors(checkpoint(out / "last.pt")["model"], checkpoint(tmp_path / "whole" / "last.pt")["model"])
    assert metrics(out) == metrics(tmp_path / "whole")
