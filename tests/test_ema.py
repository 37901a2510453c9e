"""--ema: the average is PyTorch's AveragedModel, updated once per optimizer step that happened (not per
micro-batch, not on a float16 step the scaler skipped), and it is what validation, best.pt and the end
of the run use; last.pt holds it beside the raw weights and --resume continues it exactly."""

import pytest
import torch
from torch.optim.swa_utils import AveragedModel

from tests.helpers import checkpoint, max_difference, metrics, no_pause, run_main, same_tensors, stop_after


def snapshot(module) -> dict:
    """A copy of the module's state as it is now."""
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def averaged(state: dict) -> dict:
    """The module's entries of an AveragedModel's state dict, under the module's own keys."""
    return {key.removeprefix("module."): value for key, value in state.items() if key.startswith("module.")}


@pytest.fixture
def recorded_updates(monkeypatch):
    """Each call of AveragedModel.update_parameters: a copy of the weights it averaged in."""
    update, seen = AveragedModel.update_parameters, []

    def recording(self, model):
        seen.append(snapshot(model))
        return update(self, model)

    monkeypatch.setattr(AveragedModel, "update_parameters", recording)
    return seen


def test_the_average_takes_each_optimizer_step_once_with_the_decay(tmp_path, rendered, recorded_updates):
    """4 micro-batches per step: one update per window, each moving the average 1 - decay of the way, the
    decay ramped up over the first updates: min(decay, (1 + n) / (10 + n)) after n updates."""
    module = rendered("classify", ema=True, accumulate=True, seed=True)
    final = run_main(module, ["--epochs", 2, "--ema-decay", 0.9, "--out-dir", tmp_path])
    last = checkpoint(tmp_path / "last.pt")
    assert len(recorded_updates) == last["scheduler"]["last_epoch"] == 2 * 8  # 32 batches / 4 per step, per epoch
    assert last["ema"]["n_averaged"].item() == len(recorded_updates)
    expected = dict(recorded_updates[0])  # the first update copies the weights
    for n, weights in enumerate(recorded_updates[1:], 1):
        decay = min(0.9, (1 + n) / (10 + n))  # 0.18 at the second update, 0.9 from the 81st
        expected = {key: torch.lerp(expected[key], weights[key], 1 - decay) for key in weights}
    for key, value in averaged(last["ema"]).items():
        torch.testing.assert_close(value, expected[key], rtol=1e-6, atol=1e-7)
    assert not same_tensors(averaged(last["ema"]), last["model"]), "the average is not the raw weights"
    assert same_tensors(final.state_dict(), averaged(last["ema"])), "the run ends with the average's weights"


def test_a_float16_step_the_scaler_skips_does_not_move_the_average(rendered, recorded_updates):
    module = rendered("classify", ema=True, amp=True)
    args = module.parse_args(["--amp-dtype", "float16"])
    train_loader, _ = module.build_data(args)
    model = module.build_model(args)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    scheduler = module.build_scheduler(optimizer, args, total_steps=len(train_loader))
    ema = AveragedModel(model)
    autocast = torch.autocast("cpu", dtype=torch.float16)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**40)  # overflows float16 for the first steps
    run = module.Run(model, train_loader, optimizer, scheduler, autocast=autocast, scaler=scaler, ema=ema)
    result = module.train_one_epoch(run, args, no_pause, None)
    assert 0 < result["skipped_steps"] < len(train_loader)
    assert len(recorded_updates) == ema.n_averaged.item() == len(train_loader) - result["skipped_steps"]


def test_validation_best_pt_and_the_final_weights_are_the_average(tmp_path, rendered, monkeypatch):
    module = rendered("classify", ema=True, early_stop=True, seed=True)
    evaluate, evaluated = module.evaluate, []

    def recording(model, *args):
        evaluated.append(snapshot(model))
        return evaluate(model, *args)

    monkeypatch.setattr(module, "evaluate", recording)
    final = run_main(module, ["--epochs", 4, "--ema-decay", 0.9, "--patience", 100, "--out-dir", tmp_path])
    last, best = checkpoint(tmp_path / "last.pt"), checkpoint(tmp_path / "best.pt")
    assert same_tensors(evaluated[-1], averaged(last["ema"])), "the last epoch validated the average"
    assert same_tensors(best["model"], evaluated[best["epoch"] - 1]), "best.pt holds the average it validated"
    assert same_tensors(final.state_dict(), best["model"]), "the run ends with the best average"
    assert not same_tensors(last["model"], averaged(last["ema"]))


def test_resume_continues_the_average_exactly(tmp_path, rendered, monkeypatch):
    module = rendered("classify", ema=True, accumulate=True, seed=True)
    args = ["--epochs", 4, "--ema-decay", 0.95]
    whole = run_main(module, [*args, "--out-dir", tmp_path / "whole"])
    with monkeypatch.context() as patch:
        stop_after(module, patch, epoch=2)
        with pytest.raises(SystemExit):
            run_main(module, [*args, "--out-dir", tmp_path / "cut"])
    resumed = run_main(module, [*args, "--out-dir", tmp_path / "cut", "--resume"])
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")
    cut, straight = checkpoint(tmp_path / "cut" / "last.pt"), checkpoint(tmp_path / "whole" / "last.pt")
    assert same_tensors(cut["ema"], straight["ema"]) and same_tensors(cut["model"], straight["model"])
    assert same_tensors(resumed.state_dict(), whole.state_dict())


def test_the_gan_averages_its_generator_and_scores_the_average(tmp_path, rendered, monkeypatch, recorded_updates):
    module = rendered("gan", ema=True, gp=True, early_stop=True)
    sample_quality, scored = module.sample_quality, []

    def recording(generator, noise):
        scored.append(snapshot(generator))
        return sample_quality(generator, noise)

    monkeypatch.setattr(module, "sample_quality", recording)
    argv = ["--epochs", 2, "--steps-per-epoch", 5, "--n-critic", 2, "--ema-decay", 0.9, "--out-dir", tmp_path]
    generator, _ = run_main(module, argv)
    last, best = checkpoint(tmp_path / "last.pt"), checkpoint(tmp_path / "best.pt")
    assert len(recorded_updates) == last["ema"]["n_averaged"].item() == 10, "once per generator step"
    assert recorded_updates[0].keys() == last["generator"].keys(), "the generator's average, not the critic's"
    assert same_tensors(scored[-1], averaged(last["ema"]))
    assert same_tensors(best["generator"], scored[best["epoch"] - 1]) and "critic" in best
    assert same_tensors(generator.state_dict(), best["generator"])


def test_accumulated_windows_give_the_average_of_one_large_batch(tmp_path, rendered):
    """The accumulation guarantee holds for the average too: it takes the same steps."""
    common = ["--epochs", 2, "--seed", 3, "--warmup-steps", 5, "--ema-decay", 0.9]
    accumulating = rendered("classify", seed=True, accumulate=True, ema=True)
    run_main(accumulating, [*common, "--accumulate-steps", 4, "--batch-size", 16, "--out-dir", tmp_path / "k4"])
    run_main(rendered("classify", seed=True, ema=True), [*common, "--batch-size", 64, "--out-dir", tmp_path / "large"])
    k4, large = checkpoint(tmp_path / "k4" / "last.pt"), checkpoint(tmp_path / "large" / "last.pt")
    assert max_difference(averaged(k4["ema"]), averaged(large["ema"])) < 1e-5


def test_the_same_seed_gives_the_same_average_and_the_lr_plot_changes_nothing(tmp_path, rendered):
    args = ["--epochs", 2, "--seed", 5, "--ema-decay", 0.9]
    run_main(rendered("classify", seed=True, ema=True), [*args, "--out-dir", tmp_path / "a"])
    run_main(rendered("classify", seed=True, ema=True), [*args, "--out-dir", tmp_path / "b"])
    run_main(rendered("classify", seed=True, ema=True, lr_plot=True), [*args, "--out-dir", tmp_path / "plot"])
    a, b, plot = (checkpoint(tmp_path / name / "last.pt")["ema"] for name in ("a", "b", "plot"))
    assert same_tensors(a, b) and same_tensors(a, plot)
    assert metrics(tmp_path / "a") == metrics(tmp_path / "b") == metrics(tmp_path / "plot")
