"""Signals: Ctrl-C (once, twice, at start-up, while the lr plot is drawn), SIGTERM, kill -9 at any moment,
output piped to head: each stops the run with what it saved and the command that resumes it."""

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

from tests import real_data
from tests.faults import ARGS, EPOCHS, one_line, start, wait_for_rows
from tests.helpers import checkpoint, metrics, run_main, run_script, same_tensors


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
def test_ctrl_c_twice_stops_at_once_keeping_the_last_save(tmp_path, projects):
    """The second Ctrl-C, more than a second after the first, stops the run at once: here while a sample loads
    for a minute (a dataset on a stalled network disk). The first asks for a stop after the step, which never
    comes; the second ends the run there, with last.pt as the last epoch left it."""
    project = edit(tmp_path / "p", projects["classify"])
    stalled, out = tmp_path / "stalled", tmp_path / "run"
    process = start(project, *ARGS, "--out-dir", out, env={"SLOW": str(tmp_path / "stall")})
    try:
        wait_for_rows(out, 1, process)
        (tmp_path / "stall").touch()  # every load from now on stalls
        deadline = time.monotonic() + 60
        while not stalled.exists():
            assert time.monotonic() < deadline and process.poll() is None
            time.sleep(0.05)
        process.send_signal(signal.SIGINT)
        time.sleep(1.5)  # past the second in which a repeat is the same signal delivered again
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)  # the stalled load alone would take 60 s
    finally:
        process.kill()
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.count("stopping after this step (again to stop now)") == 1
    saved = checkpoint(out / "last.pt")
    assert saved["position"] is None and saved["epoch"] == len(metrics(out)) >= 1
    assert f"holds epoch {saved['epoch']}. Resume with:" in stderr


def edit(project, source):
    """A copy of source whose dataset stalls each load for a minute once $SLOW's file exists, saying so."""
    shutil.copytree(source, project)
    real_data.edit(project, batch_norm=False)
    script = project / "train.py"
    stall = """if os.environ.get("SLOW") and os.path.exists(os.environ["SLOW"]):
            Path(os.environ["SLOW"]).with_name("stalled").touch()
            time.sleep(60)"""
    old = 'if os.environ.get("SLOW"):\n            time.sleep(float(os.environ["SLOW"]))'
    assert old in script.read_text()
    script.write_text(script.read_text().replace(old, stall))
    return project


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
        signal.raise_signal(signal.SIGINT)
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
