"""What users choose and watch in every script: --optimizer, --weight-decay, --schedule (each choice keeps
the guarantees: accumulation equals a large batch, resume is bit-identical, the lr plot draws the schedule
the run trains with), and the progress bar, drawn on a terminal only and changing nothing."""

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest
import torch

from tests.helpers import checkpoint, max_difference, metrics, render, run_main, same_tensors, stop_after

# a representative set, not the product: each optimizer and each schedule at least once, off their defaults
CHOICES = [
    ("sgd", "constant"),
    ("adam", "linear"),
    ("adamw", "constant"),
    ("sgd", "warmup-cosine"),
]


def choice_args(optimizer: str, schedule: str) -> list:
    return ["--optimizer", optimizer, "--schedule", schedule, "--weight-decay", 0.05, "--warmup-steps", 5]


@pytest.mark.parametrize(("optimizer", "schedule"), CHOICES)
def test_each_choice_keeps_accumulation_exact_and_resume_bit_identical(
    tmp_path, rendered, monkeypatch, optimizer, schedule
):
    """4 micro-batches of 16 against batches of 64 (2,000 samples: each epoch ends with a short window), and
    a run stopped after epoch 1 and resumed against an uninterrupted one."""
    common = ["--epochs", 2, "--seed", 3, *choice_args(optimizer, schedule)]
    accumulating = rendered("classify", seed=True, accumulate=True)
    k4 = run_main(accumulating, [*common, "--accumulate-steps", 4, "--batch-size", 16, "--out-dir", tmp_path / "k4"])
    large = run_main(rendered("classify", seed=True), [*common, "--batch-size", 64, "--out-dir", tmp_path / "large"])
    assert max_difference(k4.state_dict(), large.state_dict()) < 1e-5
    assert [row["lr"] for row in metrics(tmp_path / "k4")] == [row["lr"] for row in metrics(tmp_path / "large")]
    untouched = accumulating.build_model(accumulating.parse_args([]))
    assert max_difference(large.state_dict(), untouched.state_dict()) > 1e-2, "the weights moved"

    with monkeypatch.context() as patch:
        stop_after(accumulating, patch, epoch=1)
        with pytest.raises(SystemExit):
            run_main(
                accumulating, [*common, "--accumulate-steps", 4, "--batch-size", 16, "--out-dir", tmp_path / "cut"]
            )
    resumed = run_main(
        accumulating, [*common, "--accumulate-steps", 4, "--batch-size", 16, "--out-dir", tmp_path / "cut", "--resume"]
    )
    assert same_tensors(resumed.state_dict(), k4.state_dict())
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "k4")
    optimizer_state = checkpoint(tmp_path / "cut" / "last.pt")["optimizer"]
    assert [group["weight_decay"] for group in optimizer_state["param_groups"]] == [0.05, 0.0]


@pytest.mark.parametrize(("optimizer", "schedule"), [("sgd", "warmup-cosine"), ("adamw", "constant")])
def test_the_gan_takes_the_choices_too(tmp_path, rendered, optimizer, schedule):
    """Both models' optimizers are the one chosen (AdamW: decoupled weight decay, which Adam's groups also name
    but set False; SGD: momentum, which Adam's lack), with WGAN-GP's betas and --weight-decay on the weights
    alone; the lr column is the chosen schedule's."""
    module = rendered("gan", gp=True, seed=True)
    argv = ["--epochs", 2, "--steps-per-epoch", 5, "--n-critic", 2, *choice_args(optimizer, schedule)]
    run_main(module, [*argv, "--out-dir", tmp_path])
    saved = checkpoint(tmp_path / "last.pt")
    for name in ("critic_optimizer", "generator_optimizer"):
        decayed, kept = saved[name]["param_groups"]
        assert (decayed["weight_decay"], kept["weight_decay"]) == (0.05, 0.0)
        if optimizer == "adamw":
            assert decayed["decoupled_weight_decay"] is True and decayed["betas"] == (0.5, 0.9)
        else:
            assert decayed["momentum"] == 0.9 and "betas" not in decayed
    args = module.parse_args([str(arg) for arg in argv])
    scheduler = module.build_scheduler(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr), args, 10)
    expected = []
    for _ in range(2):  # two epochs of 5 generator steps
        for _ in range(5):
            scheduler.optimizer.step()
            scheduler.step()
        expected.append(scheduler.get_last_lr()[0])
    assert [float(row["lr"]) for row in metrics(tmp_path)] == pytest.approx(expected, rel=1e-12)
    assert (expected[0] == expected[1]) == (schedule == "constant")


@pytest.mark.parametrize("task", ["classify", "gan"])
def test_weight_decay_applies_to_the_weights_not_to_biases_or_norms(rendered, task):
    module = rendered(task)
    args = module.parse_args(["--weight-decay", "0.1", "--optimizer", "adamw"])
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    decayed, kept = module.build_optimizer(model, args).param_groups
    assert decayed["weight_decay"] == 0.1 and kept["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in kept["params"]} == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
        id(model[2].bias),
    }
    assert isinstance(module.build_optimizer(model, module.parse_args(["--optimizer", "sgd"])), torch.optim.SGD)
    assert type(module.build_optimizer(model, module.parse_args(["--optimizer", "adam"]))) is torch.optim.Adam


def rates(module, argv: list[str], total_steps: int) -> list[float]:
    """The learning rate of each optimizer step under these options."""
    args = module.parse_args([str(arg) for arg in argv])
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=args.lr)
    scheduler = module.build_scheduler(optimizer, args, total_steps)
    seen = []
    for _ in range(total_steps):
        seen.append(scheduler.get_last_lr()[0])
        optimizer.step()
        scheduler.step()
    return seen


def test_each_schedule_has_its_shape(rendered):
    module = rendered("classify")
    lr, warmup, total = 0.01, 5, 50
    base = ["--lr", lr, "--warmup-steps", warmup]
    constant = rates(module, [*base, "--schedule", "constant"], total)
    linear = rates(module, [*base, "--schedule", "linear"], total)
    cosine = rates(module, [*base, "--schedule", "warmup-cosine"], total)
    ramp = [min(1.0, (step + 1) / warmup) for step in range(total)]
    assert constant == pytest.approx([lr * r for r in ramp])
    assert cosine[:warmup] == pytest.approx([lr * r for r in ramp[:warmup]])
    # linear: the ramp times a straight line from lr at step 0 to 0 after the last step, as WGAN-GP's experiments
    assert linear == pytest.approx([lr * r * (1 - step / total) for step, r in enumerate(ramp)])
    assert cosine[-1] == pytest.approx(0.1 * lr, rel=0.02) and cosine[warmup] == pytest.approx(lr)


def test_the_lr_plot_draws_the_schedule_the_run_trains_with(tmp_path, rendered, monkeypatch):
    module = rendered("classify", seed=True, lr_plot=True)
    drawn = []
    monkeypatch.setattr(module, "build_scheduler", lambda *a, **k: drawn.append(a[1].schedule) or build(*a, **k))
    build = rendered("classify", seed=True).build_scheduler
    run_main(module, ["--epochs", 1, "--schedule", "constant", "--out-dir", tmp_path])
    assert drawn == ["constant", "constant"], "the plot's scheduler and the run's"
    assert (tmp_path / "lr_schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def run_with_stderr_on(project, out_dir, terminal: bool, *options: str) -> bytes:
    """Run the script with its stderr on a pseudo-terminal or on a pipe; returns what it wrote there."""
    argv = [sys.executable, "train.py", "--epochs", "2", "--seed", "1", "--out-dir", str(out_dir), *options]
    env = {**os.environ, "TQDM_MININTERVAL": "0"}  # tqdm's own setting: redraw at every step, however fast
    if not terminal:
        return subprocess.run(argv, cwd=project, capture_output=True, check=True, env=env, timeout=300).stderr
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size: 100 columns
    process = subprocess.Popen(argv, cwd=project, stdout=subprocess.DEVNULL, stderr=follower, env=env)
    os.close(follower)
    written = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the script has exited and closed its end
            break
        if not chunk:
            break
        written += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0
    return written


@pytest.mark.parametrize(("task", "shown"), [("classify", b"loss="), ("gan", b"generator=")])
def test_the_progress_bar_shows_on_a_terminal_only_and_changes_nothing(tmp_path, task, shown):
    project = render(tmp_path / "p", task, seed=True)
    options = ["--steps-per-epoch", "20"] if task == "gan" else []  # a short GAN epoch: 20 generator steps
    on_terminal = run_with_stderr_on(project, tmp_path / "tty", True, *options)
    on_pipe = run_with_stderr_on(project, tmp_path / "pipe", False, *options)
    assert b"step/s" in on_terminal and shown in on_terminal, on_terminal[-500:]
    assert on_pipe == b"", "no bar and nothing else on stderr with a pipe"
    assert metrics(tmp_path / "tty") == metrics(tmp_path / "pipe")
    tty, pipe = checkpoint(tmp_path / "tty" / "last.pt"), checkpoint(tmp_path / "pipe" / "last.pt")
    for model, optimizer in [("model", "optimizer")] if task == "classify" else [("generator", "generator_optimizer")]:
        assert same_tensors(tty[model], pipe[model])
        moments, other = tty[optimizer]["state"], pipe[optimizer]["state"]
        assert moments.keys() == other.keys() and all(same_tensors(moments[key], other[key]) for key in moments)
