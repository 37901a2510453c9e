"""Faults the rendered scripts meet off the toy defaults, each ending in one line or in a run that goes on:
a text without a newline, a second signal during validation, --sample on a device the machine lacks, a tiny
--temperature, --tensorboard without the tensorboard package."""

import signal
import subprocess
import sys

import pytest

from tests.goldens import TINY_LM
from tests.helpers import checkpoint, render, run_main, run_script

TINY = [*TINY_LM[2:], "--steps-per-epoch", 5, "--warmup-steps", 2, "--epochs", 1]  # without the corpus


@pytest.fixture(scope="module")
def lm(tmp_path_factory):
    return render(tmp_path_factory.mktemp("lm") / "p", "lm")


@pytest.fixture(scope="module")
def one_line_text(tmp_path_factory):
    """A UTF-8 text of one line, no newline at all."""
    path = tmp_path_factory.mktemp("text") / "one-line.txt"
    path.write_text(" ".join(f"word{i % 37} caf\u00e9" for i in range(3000)))
    return path


def test_a_text_without_a_newline_trains_and_samples_with_a_prompt_from_the_text(tmp_path, lm, one_line_text):
    run = tmp_path / "run"
    result = run_script(lm, "--data", one_line_text, *TINY, "--out-dir", run)
    assert result.returncode == 0, result.stderr[-2000:]
    sampled = run_script(lm, "--sample", "--out-dir", run, "--sample-length", 20)
    assert sampled.returncode == 0, sampled.stderr
    assert sampled.stdout.startswith(" ") and len(sampled.stdout.rstrip("\n")) == 21, "the text's lowest character"


def test_a_tiny_temperature_samples_the_likeliest_characters(tmp_path, lm, one_line_text):
    """1e-40 overflows logits / T to inf (softmax: nan). In training, the epoch's sample would crash before its
    save; in --sample, the command. Both now take the likeliest character each time, and agree."""
    run = tmp_path / "run"
    result = run_script(lm, "--data", one_line_text, *TINY, "--temperature", "1e-40", "--out-dir", run)
    assert result.returncode == 0, result.stderr[-2000:]
    assert checkpoint(run / "last.pt")["epoch"] == 1
    samples = [
        run_script(lm, "--sample", "--out-dir", run, "--temperature", "1e-40", "--sample-length", 30).stdout
        for _ in range(2)
    ]
    assert samples[0] == samples[1] and len(samples[0]) > 30, "greedy: the same text each time"


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_sample_on_a_device_the_machine_lacks_is_refused_in_one_line(tmp_path, lm, device):
    import torch

    if (device == "cuda" and torch.cuda.is_available()) or (device == "mps" and torch.backends.mps.is_available()):
        pytest.skip(f"this machine has {device}")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "last.pt").write_bytes(b"")
    result = run_script(lm, "--sample", "--out-dir", tmp_path / "run", "--device", device)
    assert result.returncode == 2
    assert (
        result.stderr.splitlines()[-1] == f"train.py: error: --device {device}: no {device.upper()} device is available"
    )
    assert "Traceback" not in result.stderr


def test_a_second_signal_during_the_first_validation_says_nothing_was_saved(tmp_path, rendered, capsys, monkeypatch):
    """Every step of epoch 1 ran; the second signal came during its validation, before the epoch's save."""
    module = rendered("classify")

    def validation_interrupted(*args):
        raise module.StopNow(signal.SIGTERM)  # what a second signal raises, a SIGTERM the first

    monkeypatch.setattr(module, "evaluate", validation_interrupted)
    with pytest.raises(SystemExit) as stop:
        run_main(module, ["--epochs", 2, "--out-dir", tmp_path / "run"])
    assert stop.value.code == 143
    assert capsys.readouterr().err.splitlines()[-1] == "stopped before the run's first save: nothing was saved"


BLOCK_TENSORBOARD = "import sys; sys.modules['tensorboard'] = None; import runpy; sys.argv[0] = 'train.py'; "


def without_tensorboard(project, *args):
    """train.py run as if the tensorboard package were not installed."""
    code = BLOCK_TENSORBOARD + "runpy.run_path('train.py', run_name='__main__')"
    return subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=project, capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip


def test_tensorboard_without_its_package_is_one_line_and_help_still_works(tmp_path):
    project = render(tmp_path / "p", "classify", tensorboard=True)
    assert without_tensorboard(project, "--help").returncode == 0
    result = without_tensorboard(project, "--epochs", 1, "--out-dir", tmp_path / "run")
    assert (result.returncode, result.stderr) == (
        2,
        "error: --tensorboard needs the tensorboard package: pip install tensorboard\n",
    )
    assert not (tmp_path / "run").exists(), "the run folder it made goes"
