"""--compile: the forward passes are compiled (tens of seconds on a CPU, so few tests here); checkpoints
keep the plain module's keys, so a run resumes with or without --compile; and the gradient penalty,
whose double backward torch.compile does not support, runs its pass eagerly and equals the eager one."""

import re

import pytest
import torch
import torch._dynamo
from torch import nn

from tests.goldens import TINY_LM
from tests.helpers import checkpoint, max_difference, metrics, run_main, same_tensors, stop_after

pytestmark = pytest.mark.slow  # compiling


def test_a_compiled_run_resumes_uncompiled_and_the_other_way_round(tmp_path, rendered, monkeypatch):
    compiled = rendered("classify", compile=True, seed=True, ema=True)
    eager = rendered("classify", seed=True, ema=True)
    args = ["--epochs", 3, "--ema-decay", 0.9]
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    for first, then, out in [(compiled, eager, tmp_path / "a"), (eager, compiled, tmp_path / "b")]:
        with monkeypatch.context() as patch:
            stop_after(first, patch, epoch=1)
            with pytest.raises(SystemExit):
                run_main(first, [*args, "--out-dir", out])
        saved = checkpoint(out / "last.pt")
        assert not any("_orig_mod" in key for key in [*saved["model"], *saved["ema"]]), "plain keys"
        run_main(then, [*args, "--out-dir", out, "--resume"])
        assert [row["epoch"] for row in metrics(out)] == ["1", "2", "3"]
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0, "the forward pass was compiled"


def test_the_penalty_under_compile_equals_the_eager_one(rendered):
    """The critic's forward compiled, as --compile does: the penalty and the gradients it gives the critic
    are those of the eager critic (its pass runs eagerly: torch.compile has no double backward)."""
    gradient_penalty = rendered("gan", gp=True, compile=True).gradient_penalty
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 1))
    real, fake, alpha = torch.randn(64, 2), torch.randn(64, 2), torch.rand(64, 1)
    results = []
    for compile_forward in (False, True):
        if compile_forward:
            critic.forward = torch.compile(critic.forward)
        critic.zero_grad()
        penalty = gradient_penalty(critic, real, fake, alpha, 10.0)
        penalty.backward()  # the double backward
        # the last bias gets no gradient: the penalty depends on the critic's slope alone
        results.append((penalty.detach(), [p.grad for p in critic.parameters()][:-1]))
    (eager, eager_grads), (compiled, compiled_grads) = results
    assert torch.equal(eager, compiled)
    assert all(torch.equal(a, b) for a, b in zip(eager_grads, compiled_grads, strict=False))
    critic(real).sum().backward()  # the critic's other passes do run compiled


def compile_report(out: str) -> list[tuple[int, float, float]]:
    """The lines that report compile time: (epoch, seconds compiling, the epoch's seconds)."""
    found = re.findall(r"^compiling took ([\d.]+) s of epoch (\d+)'s ([\d.]+) s$", out, flags=re.MULTILINE)
    return [(int(epoch), float(took), float(whole)) for took, epoch, whole in found]


def test_a_compiled_run_repeats_and_resumes_exactly(tmp_path, rendered, monkeypatch, capsys):
    """The guarantees the eager script keeps, compiled: the same seed gives the same run, and a stopped run
    resumed (compiled again) ends bit-identical to an uninterrupted one. Each process reports its compile
    time once, after its first epoch, as part of that epoch's time."""
    module = rendered("classify", compile=True, seed=True, accumulate=True)
    args = ["--epochs", 3, "--seed", 4]
    capsys.readouterr()
    whole = run_main(module, [*args, "--out-dir", tmp_path / "whole"])
    [(epoch, took, epoch_time)] = compile_report(capsys.readouterr().out)
    assert epoch == 1 and 0 < took <= epoch_time + 0.1
    again = run_main(module, [*args, "--out-dir", tmp_path / "again"])
    with monkeypatch.context() as patch:
        stop_after(module, patch, epoch=1)
        with pytest.raises(SystemExit):
            run_main(module, [*args, "--out-dir", tmp_path / "cut"])
    capsys.readouterr()
    resumed = run_main(module, [*args, "--out-dir", tmp_path / "cut", "--resume"])
    assert [epoch for epoch, _, _ in compile_report(capsys.readouterr().out)] == [2]
    assert metrics(tmp_path / "again") == metrics(tmp_path / "whole") == metrics(tmp_path / "cut")
    assert same_tensors(whole.state_dict(), again.state_dict())
    assert same_tensors(whole.state_dict(), resumed.state_dict())


def test_compiled_accumulation_equals_one_large_batch_and_the_lr_plot_changes_nothing(tmp_path, rendered):
    """The other two guarantees, compiled: 4 micro-batches of 16 end where batches of 64 do (the epoch ends
    with a short window), and the lr plot leaves the compiled run bit-identical."""
    common = ["--epochs", 2, "--seed", 3, "--warmup-steps", 5]
    accumulating = rendered("classify", compile=True, seed=True, accumulate=True)
    k4 = run_main(accumulating, [*common, "--accumulate-steps", 4, "--batch-size", 16, "--out-dir", tmp_path / "k4"])
    large = run_main(
        rendered("classify", compile=True, seed=True), [*common, "--batch-size", 64, "--out-dir", tmp_path / "large"]
    )
    assert max_difference(k4.state_dict(), large.state_dict()) < 1e-5
    for a, b in zip(metrics(tmp_path / "k4"), metrics(tmp_path / "large"), strict=True):
        assert float(a["lr"]) == float(b["lr"]), "the schedule steps once per optimizer step"
    plotted = run_main(
        rendered("classify", compile=True, seed=True, lr_plot=True),
        [*common, "--batch-size", 64, "--out-dir", tmp_path / "plot"],
    )
    assert same_tensors(plotted.state_dict(), large.state_dict())
    assert metrics(tmp_path / "plot") == metrics(tmp_path / "large")
    untouched = rendered("classify", seed=True).build_model(accumulating.parse_args([]))
    assert max_difference(large.state_dict(), untouched.state_dict()) > 1e-2, "the weights moved"


def test_a_compiled_language_model_resumes_exactly_and_samples_eagerly(tmp_path, rendered, monkeypatch):
    """The GPT compiled: a stopped run resumed ends bit-identical to an uninterrupted one; and sampling, which
    calls the model on a longer text for each character, runs eagerly: it compiles nothing."""
    module = rendered("lm", compile=True, seed=True)
    args = [*TINY_LM, "--epochs", 2, "--steps-per-epoch", 5, "--batch-size", 8, "--eval-windows", 16, "--seed", 4]
    whole = run_main(module, [*args, "--out-dir", tmp_path / "whole"])
    with monkeypatch.context() as patch:
        stop_after(module, patch, epoch=1)
        with pytest.raises(SystemExit):
            run_main(module, [*args, "--out-dir", tmp_path / "cut"])
    resumed = run_main(module, [*args, "--out-dir", tmp_path / "cut", "--resume"])
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")
    assert same_tensors(whole.state_dict(), resumed.state_dict())
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    assert graphs > 0, "the forward pass was compiled"
    vocab = checkpoint(tmp_path / "whole" / "last.pt")["vocab"]
    text = module.generate(whole, vocab, module.parse_args([*map(str, args), "--sample-length", "40"]), None)
    assert len(text) == 41 and torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
