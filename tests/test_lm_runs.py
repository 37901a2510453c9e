"""The language-model script's guarantees, each checked by running rendered scripts on a small fixed text
(tests/data/corpus.txt, a frozen copy of this repository's docs) with a tiny GPT: 2 layers, block 32."""

import math
import os
from collections import Counter
from pathlib import Path

import pytest
import torch

from tests.goldens import CORPUS, TINY_LM
from tests.helpers import (
    assert_the_lr_plot_changes_nothing,
    checkpoint,
    max_difference,
    metrics,
    run_main,
    run_script,
    same_tensors,
    stop_after,
)

TINY = [*TINY_LM, "--steps-per-epoch", 10, "--warmup-steps", 5]  # 2 layers of 32, block 32, batches of 8


@pytest.fixture(scope="module")
def script(rendered):
    """script(**tricks): the rendered lm train.py with these tricks, as a module."""
    return lambda **tricks: rendered("lm", **tricks)


def train(module, out_dir, *args):
    return run_main(module, [*TINY, *args, "--out-dir", out_dir])


def test_importing_has_no_side_effects_and_the_default_text_is_the_standard_library(tmp_path, monkeypatch, script):
    monkeypatch.chdir(tmp_path)
    module = script()
    args = module.parse_args([])
    train_data, val_data, vocab = module.build_data(args)
    assert list(tmp_path.iterdir()) == []
    assert (len(train_data), len(val_data)) == (900_000, 100_000), "1,000,000 characters, the last 10% to validate"
    assert vocab == "".join(sorted(set(vocab))) and train_data.dtype == torch.long
    assert "".join(vocab[i] for i in train_data[:200].tolist()) == module.default_text()[:200]
    first = (Path(os.__file__).parent / "__future__.py").read_text(encoding="utf-8")
    assert module.default_text().startswith(first), "the modules in sorted order, whole"
    model = module.build_model(args, len(vocab))
    assert model.head.weight is model.token_embedding.weight, "the output layer shares the embedding's weights"
    assert model(train_data[:10].view(2, 5)).shape == (2, 5, len(vocab))


def unigram_entropy(text: str) -> float:
    """In nats per character: the loss of a model that knows only how often each character occurs."""
    counts = Counter(text)
    return -sum(n / len(text) * math.log(n / len(text)) for n in counts.values())


def test_it_learns_more_than_how_often_each_character_occurs(tmp_path, script):
    run_main(script(seed=True), [*TINY, "--epochs", 8, "--steps-per-epoch", 50, "--lr", 3e-3, "--out-dir", tmp_path])
    rows = metrics(tmp_path, drop=set())
    assert list(rows[0]) == ["epoch", "train_loss", "tokens_per_s", "val_loss", "val_bpc", "lr", "epoch_time_s"]
    text = CORPUS.read_text(encoding="utf-8")
    entropy = unigram_entropy(text[: int(0.9 * len(text))])
    assert float(rows[0]["val_loss"]) > entropy, "an untrained model starts above it"
    assert float(rows[-1]["val_loss"]) < entropy - 0.2, f"{rows[-1]['val_loss']} against {entropy:.3f}"
    assert float(rows[-1]["val_bpc"]) == pytest.approx(float(rows[-1]["val_loss"]) / math.log(2), rel=1e-6)
    assert all(int(row["tokens_per_s"]) > 0 for row in rows)
    samples = (tmp_path / "samples.txt").read_text().split("epoch ")[1:]
    assert [sample.split(":")[0] for sample in samples] == [str(epoch) for epoch in range(1, 9)]
    assert all(len(sample) == len("1:\n") + len("\n") + 20 + len("\n\n") for sample in samples[:-1])


def test_same_seed_same_run(tmp_path, script):
    module = script(seed=True)
    runs = [train(module, tmp_path / f"run{i}", "--epochs", 2, "--seed", seed) for i, seed in enumerate([7, 7, 8])]
    assert metrics(tmp_path / "run0") == metrics(tmp_path / "run1")
    assert same_tensors(runs[0].state_dict(), runs[1].state_dict())
    assert (tmp_path / "run0" / "samples.txt").read_text() == (tmp_path / "run1" / "samples.txt").read_text()
    assert not same_tensors(runs[0].state_dict(), runs[2].state_dict()), "another seed, another run"


@pytest.mark.parametrize("clip", [False, True])
def test_accumulated_micro_batches_equal_one_large_batch(tmp_path, script, clip):
    """4 micro-batches of 4 windows against batches of 16, the same seed: the batches' generator draws the
    same 16 offsets either way, so the optimizer steps see the same windows."""
    accumulating = script(seed=True, accumulate=True, clip=clip)
    common = ["--epochs", 2, "--seed", 3]
    k4 = train(accumulating, tmp_path / "k4", *common, "--accumulate-steps", 4, "--batch-size", 4)
    k1 = train(accumulating, tmp_path / "k1", *common, "--accumulate-steps", 1, "--batch-size", 16)
    large = train(script(seed=True, clip=clip), tmp_path / "large", *common, "--batch-size", 16)
    for name, model in [("k4", k4), ("k1", k1)]:
        assert max_difference(model.state_dict(), large.state_dict()) < 1e-5, name
        for a, b in zip(metrics(tmp_path / name), metrics(tmp_path / "large"), strict=True):
            assert float(a["lr"]) == float(b["lr"]), "the schedule steps once per optimizer step"
            assert float(a["val_loss"]) == pytest.approx(float(b["val_loss"]), rel=1e-5)
            assert float(a["train_loss"]) == pytest.approx(float(b["train_loss"]), rel=1e-5)
    untouched = script(seed=True).build_model(accumulating.parse_args(list(map(str, TINY))), len(large.head.weight))
    assert max_difference(large.state_dict(), untouched.state_dict()) > 1e-2, "the weights moved"


def test_lr_plot_does_not_change_the_run(tmp_path, script):
    argv = [*TINY, "--epochs", 2, "--seed", 5]
    assert_the_lr_plot_changes_nothing(script(seed=True, lr_plot=True), script(seed=True), argv, tmp_path)


def test_early_stop_stops_after_patience_epochs_and_keeps_the_best(tmp_path, script):
    module = script(seed=True, early_stop=True)
    # an improvement must beat the best by more than 0.05 nats: the loss soon stops doing that
    model = train(module, tmp_path, "--epochs", 40, "--patience", 2, "--min-delta", 0.05, "--lr", 3e-3)
    losses = [float(row["val_loss"]) for row in metrics(tmp_path)]
    assert len(losses) < 40, "it stopped early"
    improving = [1]  # epochs that beat the best so far by more than min_delta
    for epoch, loss in enumerate(losses[1:], start=2):
        if loss < losses[improving[-1] - 1] - 0.05:
            improving.append(epoch)
    assert len(losses) - improving[-1] == 2, "exactly patience rows follow the last improvement"
    best = checkpoint(tmp_path / "best.pt")
    assert best["epoch"] == improving[-1] and best["best_metric"] == pytest.approx(losses[improving[-1] - 1])
    assert same_tensors(model.state_dict(), best["model"]), "the best weights are loaded at the end"


def test_resume_equals_the_uninterrupted_run(tmp_path, script, monkeypatch, capsys):
    """Stopped after epoch 2 of 4 and resumed: the same weights, rows and samples; the batches' generator and
    the sample list come back from last.pt."""
    module = script(seed=True, early_stop=True)
    args = ["--epochs", 4, "--seed", 11, "--patience", 100]
    whole = train(module, tmp_path / "whole", *args)
    with monkeypatch.context() as patch:
        stop_after(module, patch, epoch=2)
        with pytest.raises(SystemExit) as exit_info:
            train(module, tmp_path / "cut", *args)
    assert exit_info.value.code == 130 and "holds epoch 2" in capsys.readouterr().err
    resumed = train(module, tmp_path / "cut", *args, "--resume")
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")
    assert same_tensors(whole.state_dict(), resumed.state_dict())
    assert (tmp_path / "cut" / "samples.txt").read_text() == (tmp_path / "whole" / "samples.txt").read_text()


def test_resume_on_a_text_with_other_characters_is_refused(tmp_path, script, capsys):
    module = script()
    text = tmp_path / "text.txt"
    text.write_text(CORPUS.read_text())
    run_main(module, [*TINY, "--data", text, "--epochs", 2, "--out-dir", tmp_path / "run"])
    text.write_text(CORPUS.read_text() + "\u00e9")
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, [*TINY, "--data", text, "--epochs", 2, "--out-dir", tmp_path / "run", "--resume"])
    assert exit_info.value.code == 2 and "trained on a text with other characters" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "cannot read it: No such file or directory"),
        (b"", "is empty"),
        (b"\xff\xfe not utf-8", "is not UTF-8 text"),
        (b"text\x00with a NUL", "is not text: it holds NUL bytes"),
        (
            b"a short text, not 330 characters long\n" * 5,
            "the validation text has 19 characters; --block-size 32 needs 33",
        ),
    ],
    ids=["missing", "empty", "binary", "nul", "short"],
)
def test_a_text_that_cannot_train_is_refused_in_one_line(tmp_path, script, capsys, content, message):
    data = tmp_path / "text.txt"
    if content is not None:
        data.write_bytes(content)
    with pytest.raises(SystemExit) as exit_info:
        run_main(script(), [*TINY, "--data", data, "--out-dir", tmp_path / "run"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and message in err, err


def test_a_prompt_with_characters_the_text_lacks_is_refused(tmp_path, script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_main(script(), [*TINY, "--prompt", "d\u00e9f", "--out-dir", tmp_path / "run"])
    assert exit_info.value.code == 2 and "has characters that the text has not: '\u00e9'" in capsys.readouterr().err


def test_sample_prints_a_continuation_of_the_saved_run_without_training(tmp_path, script):
    project = Path(script(seed=True, early_stop=True).__file__).parent
    run = tmp_path / "run"
    assert run_script(project, *TINY, "--epochs", 2, "--out-dir", run).returncode == 0
    files = sorted(p.name for p in run.iterdir())
    result = run_script(project, "--sample", "--out-dir", run, "--prompt", "The ", "--sample-length", 50)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("The ") and len(result.stdout) == len("The ") + 50 + len("\n")
    assert sorted(p.name for p in run.iterdir()) == files, "nothing written"
    module, seeds = script(seed=True, early_stop=True), []
    with pytest.MonkeyPatch.context() as patch:  # a new draw each time: a fresh 64-bit seed per --sample
        patch.setattr(module, "generate", lambda model, vocab, args, generator: seeds.append(generator.initial_seed()))
        for _ in range(2):
            module.sample_saved_run(module.parse_args(["--sample", "--out-dir", str(run)]))
    assert len(seeds) == 2 and seeds[0] != seeds[1]
    missing = run_script(project, "--sample", "--out-dir", tmp_path / "none")
    assert missing.returncode == 2 and "--sample needs --out-dir, a run folder with a last.pt" in missing.stderr


def test_sample_takes_best_pt_and_the_trained_shape(tmp_path, script, monkeypatch, capsys):
    """--sample builds the model as it was trained (the saved --block-size and sizes, not this command's
    defaults) and loads best.pt's weights, which are not last.pt's here."""
    module = script(seed=True, early_stop=True)
    train(module, tmp_path, "--epochs", 3, "--patience", 100)
    best, last = checkpoint(tmp_path / "best.pt"), checkpoint(tmp_path / "last.pt")
    best["model"] = {name: value + 0.5 for name, value in best["model"].items()}  # unlike last.pt's
    torch.save(best, tmp_path / "best.pt")
    loaded = []
    monkeypatch.setattr(module, "generate", lambda model, vocab, args, generator: loaded.append((model, args)))
    run_main(module, ["--sample", "--out-dir", tmp_path])
    [(model, args)] = loaded
    assert same_tensors(model.state_dict(), best["model"]) and not same_tensors(model.state_dict(), last["model"])
    assert args.block_size == 32 and args.n_embd == 32 and args.prompt is None  # the default: a newline


def test_ema_samples_and_ends_with_the_average(tmp_path, script, monkeypatch):
    module = script(seed=True, ema=True)
    model = train(module, tmp_path, "--epochs", 2, "--ema-decay", 0.9)
    last = checkpoint(tmp_path / "last.pt")
    averaged = module.averaged_weights(last["ema"])
    assert same_tensors(model.state_dict(), averaged), "the run ends with the average"
    assert not same_tensors(last["model"], averaged)
    loaded = []
    monkeypatch.setattr(module, "generate", lambda model, *rest: loaded.append(model.state_dict()))
    run_main(module, ["--sample", "--out-dir", tmp_path])
    assert same_tensors(loaded[0], averaged), "--sample takes the average from last.pt"


def test_bfloat16_amp_trains_close_to_float32(tmp_path, script):
    args = ["--epochs", 3, "--seed", 1]
    train(script(seed=True, amp=True), tmp_path / "bf16", *args)
    train(script(seed=True), tmp_path / "fp32", *args)
    mixed, full = metrics(tmp_path / "bf16"), metrics(tmp_path / "fp32")
    assert all(row["skipped_steps"] == "0" for row in mixed), "bfloat16 needs no scaler"
    # the quality, not the weights: bfloat16 rounding differs between CPUs
    assert float(mixed[-1]["val_loss"]) == pytest.approx(float(full[-1]["val_loss"]), rel=0.03)
