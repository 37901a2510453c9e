"""The GAN script: gradient_penalty's properties, a short seeded run's quality, and every other trick
composed with --gp."""

import contextlib
import math

import pytest
import torch
from torch import nn

from tests.helpers import checkpoint, max_difference, metrics, run_main, same_tensors


@pytest.fixture(scope="module")
def script(rendered):
    """script(**tricks): the rendered gan train.py with these tricks, as a module."""
    return lambda **tricks: rendered("gan", **tricks)


def penalty_by_definition(critic, real, fake, lambda_gp, alpha):
    """lambda * mean over samples of (||grad D(x)||_2 - 1)^2, x = alpha real + (1 - alpha) fake."""
    terms = []
    for a, r, f in zip(alpha, real, fake, strict=False):
        x = (a * r + (1 - a) * f).unsqueeze(0).requires_grad_(True)
        (grad,) = torch.autograd.grad(critic(x).sum(), x)
        terms.append((grad.pow(2).sum().sqrt() - 1) ** 2)
    return lambda_gp * torch.stack(terms).mean()


@pytest.mark.parametrize("shape", [(16, 2), (6, 3, 5, 4)], ids=["2-D", "4-D"])
def test_gradient_penalty_equals_its_definition(script, shape):
    gradient_penalty = script(gp=True).gradient_penalty
    torch.manual_seed(0)
    features = math.prod(shape[1:])
    critic = nn.Sequential(nn.Flatten(), nn.Linear(features, 8), nn.Tanh(), nn.Linear(8, 1))
    real, fake = torch.randn(shape), torch.randn(shape)
    alpha = torch.rand(shape[0], *[1] * (len(shape) - 1))  # one mixing weight per sample
    penalty = gradient_penalty(critic, real, fake, alpha, 10.0)
    expected = penalty_by_definition(critic, real, fake, 10.0, alpha.flatten())
    assert penalty.shape == () and penalty.item() == pytest.approx(expected.item(), rel=1e-5)


def test_a_linear_critic_gives_lambda_times_norm_minus_one_squared(script):
    gradient_penalty = script(gp=True).gradient_penalty
    critic = nn.Linear(3, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[2.0, -1.0, 0.5]]))
    expected = 10.0 * (math.sqrt(4 + 1 + 0.25) - 1) ** 2
    for _ in range(3):  # whatever the samples
        real, fake, alpha = 5 * torch.randn(32, 3), torch.randn(32, 3) - 3, torch.rand(32, 1)
        assert gradient_penalty(critic, real, fake, alpha, 10.0).item() == pytest.approx(expected, rel=1e-6)


def test_the_penalty_trains_the_critic(script):
    """create_graph: backward reaches the critic's weights: d/dw lambda (||w|| - 1)^2."""
    gradient_penalty = script(gp=True).gradient_penalty
    critic = nn.Linear(2, 1)
    with torch.no_grad():
        critic.weight.copy_(torch.tensor([[3.0, 4.0]]))
    gradient_penalty(critic, torch.randn(8, 2), torch.randn(8, 2), torch.rand(8, 1), 10.0).backward()
    w = critic.weight.detach()
    assert torch.allclose(critic.weight.grad, 2 * 10.0 * (w.norm() - 1) * w / w.norm())


def test_the_scaled_path_equals_the_unscaled_one(script):
    """Under a float16 GradScaler the gradient is taken of scaled scores, then unscaled: the same
    penalty, on CPU with a simulated scale."""
    gradient_penalty = script(gp=True, amp=True).gradient_penalty
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 1))
    real, fake, alpha = torch.randn(64, 2), torch.randn(64, 2), torch.rand(64, 1)
    values = {}
    for scale in (1.0, 1024.0, 65536.0):
        values[scale] = gradient_penalty(critic, real, fake, alpha, 10.0, contextlib.nullcontext(), scale=scale).item()
    assert values[1024.0] == pytest.approx(values[1.0], rel=1e-6)
    assert values[65536.0] == pytest.approx(values[1.0], rel=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_scaled_path_under_float16_autocast_on_cuda(script):
    gradient_penalty = script(gp=True, amp=True).gradient_penalty
    torch.manual_seed(0)
    critic = nn.Sequential(nn.Linear(2, 64), nn.ReLU(), nn.Linear(64, 1)).cuda()
    real, fake = torch.randn(256, 2, device="cuda"), torch.randn(256, 2, device="cuda")
    alpha = torch.rand(256, 1, device="cuda")
    reference = gradient_penalty(critic, real, fake, alpha, 10.0, contextlib.nullcontext()).item()
    float16 = torch.autocast("cuda", dtype=torch.float16)
    scaled = gradient_penalty(critic, real, fake, alpha, 10.0, float16, scale=1024.0).item()
    assert scaled == pytest.approx(reference, rel=1e-2)


def test_a_short_seeded_wgan_gp_run_covers_most_modes(tmp_path, script):
    """A regression guard that keeps CI quick: 500 generator steps. The full quality target (8 modes,
    70% high quality) is measured by benchmarks/gan_ring.py."""
    run_main(script(gp=True, seed=True), ["--epochs", 5, "--seed", 3, "--out-dir", tmp_path / "run"])
    rows = metrics(tmp_path / "run")
    assert int(rows[-1]["modes_covered"]) >= 6
    assert float(rows[-1]["hq_fraction"]) > 0.1
    assert (tmp_path / "run" / "samples.png").read_bytes()[:4] == b"\x89PNG"


def test_metrics_columns_and_checkpoints(tmp_path, script):
    run_main(script(gp=True, early_stop=True), ["--epochs", 2, "--steps-per-epoch", 5, "--out-dir", tmp_path])
    rows = metrics(tmp_path, drop=set())
    assert list(rows[0]) == [
        "epoch", "critic_loss", "generator_loss", "wasserstein", "gp", "lr", "modes_covered", "hq_fraction",
        "epoch_time_s",
    ]  # fmt: skip
    last = checkpoint(tmp_path / "last.pt")
    assert {"generator", "critic", "critic_optimizer", "generator_optimizer", "epoch", "args"} <= set(last)
    assert {"critic_scheduler", "generator_scheduler", "early_stopping", "rng"} <= set(last)
    best = checkpoint(tmp_path / "best.pt")
    assert set(best) == {"generator", "critic", "epoch", "monitor", "best_metric"} and best["monitor"] == "hq_fraction"
    assert best["best_metric"] == max(float(row["hq_fraction"]) for row in rows)


def test_the_plain_gan_has_no_penalty(tmp_path, script):
    module = script()
    assert not hasattr(module, "gradient_penalty")
    assert module.parse_args([]).n_critic == 1 and script(gp=True).parse_args([]).n_critic == 5
    run_main(module, ["--epochs", 2, "--steps-per-epoch", 20, "--out-dir", tmp_path])
    rows = metrics(tmp_path)
    assert "gp" not in rows[0] and "wasserstein" not in rows[0]
    assert all(math.isfinite(float(row["critic_loss"])) for row in rows)


def test_wgan_gp_with_every_other_trick(tmp_path, script):
    module = script(gp=True, seed=True, amp=True, clip=True, accumulate=True, lr_plot=True, early_stop=True)
    argv = ["--epochs", 2, "--steps-per-epoch", 10, "--accumulate-steps", 2, "--seed", 4]
    run_main(module, [*argv, "--out-dir", tmp_path / "a"])
    run_main(module, [*argv, "--out-dir", tmp_path / "b"])
    rows = metrics(tmp_path / "a", drop=set())
    assert {"critic_grad_norm", "generator_grad_norm", "skipped_steps"} <= set(rows[0])
    assert all(math.isfinite(float(row["wasserstein"])) for row in rows)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b"), "same seed, same run"
    last, again = checkpoint(tmp_path / "a" / "last.pt"), checkpoint(tmp_path / "b" / "last.pt")
    for name in ("generator", "critic"):
        assert same_tensors(last[name], again[name]), f"same seed, same {name} weights"
    # the schedules step once per optimizer step: 10 generator steps and 50 critic steps an epoch
    assert last["generator_scheduler"]["last_epoch"] == 20 and last["critic_scheduler"]["last_epoch"] == 100
    assert {p.name for p in (tmp_path / "a").iterdir()} >= {"lr_schedule.png", "samples.png", "best.pt"}


@pytest.mark.parametrize(("gp", "optimizer"), [(True, "sgd"), (False, "adam")], ids=["wgan-gp", "plain"])
def test_accumulation_equals_one_large_batch(tmp_path, script, gp, optimizer):
    """2 micro-batches of 32 against batches of 64: a step draws its whole batch at once (real samples, noise and,
    with the penalty, its mixing weights) and splits it, so both runs draw the same inputs, and a window's mean
    gradient is the large batch's: the same weights, both models, to float32's rounding. (WGAN-GP with SGD: Adam
    divides by each gradient's running size, and the penalty's near-zero gradients then turn that rounding into
    steps of up to the learning rate.)"""
    common = ["--epochs", 2, "--steps-per-epoch", 5, "--n-critic", 2, "--seed", 4, "--warmup-steps", 2,
              "--optimizer", optimizer]  # fmt: skip
    small = [*common, "--accumulate-steps", 2, "--batch-size", 32, "--out-dir", tmp_path / "k2"]
    run_main(script(gp=gp, seed=True, accumulate=True), small)
    run_main(script(gp=gp, seed=True), [*common, "--batch-size", 64, "--out-dir", tmp_path / "large"])
    k2, large = checkpoint(tmp_path / "k2" / "last.pt"), checkpoint(tmp_path / "large" / "last.pt")
    untrained = script(gp=gp, seed=True).build_models(script(gp=gp, seed=True).parse_args([]))
    for name, model in zip(("generator", "critic"), untrained, strict=True):
        assert max_difference(k2[name], large[name]) < 1e-5, name
        assert max_difference(large[name], model.state_dict()) > 1e-3, f"the {name} trained"
    for a, b in zip(metrics(tmp_path / "k2"), metrics(tmp_path / "large"), strict=True):
        assert float(a["generator_loss"]) == pytest.approx(float(b["generator_loss"]), rel=1e-4, abs=1e-6)


def test_float16_scaling_composes_with_the_penalty(tmp_path, script):
    """float16 autocast with GradScalers on CPU: the penalty's scaled path runs, losses stay finite."""
    module = script(gp=True, amp=True, clip=True)
    run_main(module, ["--epochs", 2, "--steps-per-epoch", 10, "--amp-dtype", "float16", "--out-dir", tmp_path])
    rows = metrics(tmp_path)
    assert all(math.isfinite(float(row["generator_loss"])) for row in rows)
    last = checkpoint(tmp_path / "last.pt")
    assert last["critic_scaler"]["scale"] > 0 and last["generator_scaler"]["scale"] > 0
