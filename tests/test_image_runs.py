"""The image-classification script's guarantees, each checked by running rendered scripts on small image folders
(tests/images.py: 16x16 after resizing, a tiny ResNet), and once on the default generated data set."""

import csv
import signal

import pytest
import torch

from tests.helpers import (
    assert_the_lr_plot_changes_nothing,
    checkpoint,
    metrics,
    render,
    run_main,
    run_script,
    same_tensors,
)
from tests.images import COLOURS, TINY_IMAGES, make_images

SIX = {"seed": True, "amp": True, "clip": True, "accumulate": True, "lr_plot": True, "early_stop": True}
TINY = [*TINY_IMAGES, "--warmup-steps", 2]


@pytest.fixture(scope="module")
def script(rendered):
    """script(**tricks): the rendered image train.py with these tricks, as a module."""
    return lambda **tricks: rendered("image", **tricks)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return make_images(tmp_path_factory.mktemp("images") / "data")


def tiny(images, *more):
    return [*TINY, "--data", images, *more]


def without_batch_norm(module, monkeypatch):
    """build_model's ResNet with its batch norm layers replaced by identities: a sample's gradient then depends
    on the sample alone, so accumulation and ranks can equal one large batch exactly."""
    build_model = module.build_model

    def build(args, num_classes):
        model = build_model(args, num_classes)
        for parent in list(model.modules()):
            for name, child in parent.named_children():
                if isinstance(child, torch.nn.BatchNorm2d):
                    setattr(parent, name, torch.nn.Identity())
        return model

    monkeypatch.setattr(module, "build_model", build)


def test_the_folders_every_format_and_the_split_without_val(tmp_path, script):
    module = script()
    root = make_images(tmp_path / "data", per_class=10, val=0)
    args = module.parse_args(["--data", str(root), "--image-size", "16"])
    train_loader, val_loader, info = module.build_data(args)
    assert info["classes"] == sorted(COLOURS)
    # without val/, every 5th image of each class validates: 2 of 10
    assert len(train_loader.dataset) == 24 and len(val_loader.dataset) == 6
    assert {path.suffix for path, _ in train_loader.dataset.files} == {".png", ".jpg", ".bmp"}
    x, y = next(iter(val_loader))
    assert x.shape == (6, 3, 16, 16) and x.dtype == torch.float32 and y.tolist() == [0, 0, 1, 1, 2, 2]
    # normalised with the training images' statistics: about zero mean and unit deviation per channel
    assert len(info["mean"]) == len(info["std"]) == 3 and all(0 < s < 1 for s in info["std"])


def test_it_trains_validates_and_saves_in_the_notes_format(tmp_path, script, images, capsys):
    module = script(early_stop=True)
    run_main(module, tiny(images, "--epochs", 2, "--out-dir", tmp_path / "run"))
    rows = metrics(tmp_path / "run", drop=set())
    assert list(rows[0]) == [
        "epoch", "train_loss", "train_acc", "images_per_s", "val_loss", "val_acc", "lr", "epoch_time_s",
    ]  # fmt: skip
    assert all(0 <= float(row["train_acc"]) <= 1 and int(row["images_per_s"]) > 0 for row in rows)
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("[ Valid |")]
    assert lines[0].startswith("[ Valid | 001/002 ] loss = ") and ", acc = " in lines[0]
    assert lines[0].endswith("-> best")
    last = checkpoint(tmp_path / "run" / "last.pt")
    assert last["data"]["classes"] == sorted(COLOURS) and len(last["data"]["mean"]) == 3


def test_same_seed_same_weights_whatever_the_number_of_workers(tmp_path, script, images):
    module = script(seed=True)
    runs = {
        name: run_main(
            module, tiny(images, "--epochs", 2, "--seed", seed, "--num-workers", workers, "--out-dir", tmp_path / name)
        )  # fmt: skip
        for name, seed, workers in [("w0", 4, 0), ("w2", 4, 2), ("other", 5, 0)]
    }
    assert same_tensors(runs["w0"].state_dict(), runs["w2"].state_dict())
    assert metrics(tmp_path / "w0") == metrics(tmp_path / "w2")
    assert not same_tensors(runs["w0"].state_dict(), runs["other"].state_dict()), "another seed, another run"


def test_a_run_stopped_mid_epoch_resumes_bit_identical(tmp_path, script, images, monkeypatch):
    """Ctrl-C after the 2nd optimizer step of epoch 2 (3 per epoch: 6 batches, 2 per step): saved there, resumed,
    it ends with the weights, batch norm statistics, average and rows of the run never stopped."""
    module = script(**SIX, ema=True)
    argv = tiny(images, "--epochs", 3, "--seed", 2, "--patience", 10, "--accumulate-steps", 2)
    whole = run_main(module, [*argv, "--out-dir", tmp_path / "whole"])
    show_losses, calls = module.show_losses, []

    def stop_at_step(progress, **losses):
        calls.append(1)
        if len(calls) == 3 + 2:
            signal.raise_signal(signal.SIGINT)
        show_losses(progress, **losses)

    monkeypatch.setattr(module, "show_losses", stop_at_step)
    with pytest.raises(SystemExit) as stopped:
        run_main(module, [*argv, "--out-dir", tmp_path / "stopped"])
    assert stopped.value.code == 130
    monkeypatch.setattr(module, "show_losses", show_losses)
    assert checkpoint(tmp_path / "stopped" / "last.pt")["position"]["done"] == 4
    resumed = run_main(module, [*argv, "--out-dir", tmp_path / "stopped", "--resume"])
    assert same_tensors(resumed.state_dict(), whole.state_dict())
    assert metrics(tmp_path / "stopped") == metrics(tmp_path / "whole")


def test_lr_plot_changes_nothing(tmp_path, script, images):
    plotted, plain = script(seed=True, lr_plot=True), script(seed=True)
    assert_the_lr_plot_changes_nothing(plotted, plain, tiny(images, "--epochs", 2, "--seed", 3), tmp_path)


@pytest.mark.parametrize("batch", [4, 5])
def test_accumulated_micro_batches_equal_one_large_batch_without_batch_norm(tmp_path, script, images, monkeypatch,
                                                                           batch):  # fmt: skip
    """3 micro-batches of B against batches of 3*B, the norm layers replaced by identities (with them, each
    micro-batch is normalised by its own statistics: close to, not equal to, the large batch). 24 images:
    B=4 makes 2 whole windows; B=5 a whole one, then one of a batch of 5 and a batch of 4."""
    accumulating, plain = script(seed=True, accumulate=True), script(seed=True)
    for module in (accumulating, plain):
        without_batch_norm(module, monkeypatch)
    common = tiny(images, "--epochs", 2, "--seed", 3, "--optimizer", "sgd", "--lr", 0.05)
    k3 = run_main(accumulating, [*common, "--batch-size", batch, "--accumulate-steps", 3, "--out-dir", tmp_path / "k"])
    large = run_main(plain, [*common, "--batch-size", 3 * batch, "--out-dir", tmp_path / "large"])
    for key, value in large.state_dict().items():
        torch.testing.assert_close(k3.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)


@pytest.mark.parametrize("tricks", [{}, {"ema": True}, {"early_stop": True, "ema": True}], ids=["last", "ema", "best"])
def test_predict_labels_a_folder_with_the_weights_validation_scored(tmp_path, script, images, tricks):
    """--predict on the validation folder: one row per image (paths relative to it), each the label and
    probability of the weights the run validated last (last.pt's; with --ema the average's) or best (best.pt's,
    with --early-stop): computed here from those weights, and scoring the accuracy metrics.csv gives them."""
    module = script(seed=True, **tricks)
    out = tmp_path / "run"
    run_main(module, tiny(images, "--epochs", 3, "--seed", 6, "--out-dir", out))
    run_main(module, ["--out-dir", out, "--predict", images / "val", "--num-workers", 0])
    with open(out / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    last = checkpoint(out / "last.pt")
    if tricks.get("early_stop"):
        weights, scored = checkpoint(out / "best.pt")["model"], metrics(out)[checkpoint(out / "best.pt")["epoch"] - 1]
    else:
        weights = module.averaged_weights(last["ema"]) if tricks.get("ema") else last["model"]
        scored = metrics(out)[-1]
    model = module.build_model(module.parse_args(TINY_IMAGES), len(COLOURS))
    model.load_state_dict(weights)
    files = sorted(path for path in (images / "val").rglob("*") if path.is_file())
    x = torch.stack([module.ImageFiles([(path, -1)], module.center, 16, last["data"])[0][0] for path in files])
    probability, label = torch.softmax(model.eval()(x), dim=1).max(dim=1)
    assert [row["file"] for row in rows] == [path.relative_to(images / "val").as_posix() for path in files]
    assert [row["label"] for row in rows] == [sorted(COLOURS)[i] for i in label.tolist()]
    assert [float(row["probability"]) for row in rows] == pytest.approx(probability.tolist(), abs=1e-4)
    accuracy = sum(row["file"].split("/")[0] == row["label"] for row in rows) / len(rows)
    assert accuracy == pytest.approx(float(scored["val_acc"]))


BAD = {
    "no folder": (lambda root: root / "missing", "no such folder"),
    "no train/": (lambda root: root.mkdir() or root, "no train/ folder"),
    "no classes": (lambda root: (root / "train").mkdir(parents=True) or root, "no class folders"),
    "an empty class": (lambda root: (make_images(root) / "train" / "empty").mkdir() or root, "empty: no images"),
    "nothing to validate": (lambda root: make_images(root, per_class=4, val=0), "no images to validate on"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_data_folder_is_refused_in_one_line(tmp_path, script, capsys, case):
    make, message = BAD[case]
    with pytest.raises(SystemExit) as refused:
        run_main(script(), [*TINY, "--data", make(tmp_path / "data"), "--out-dir", tmp_path / "run"])
    err = capsys.readouterr().err
    assert refused.value.code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_predict_refuses_a_folder_without_images_and_a_run_without_last_pt(tmp_path, script, images, capsys):
    module = script()
    run_main(module, tiny(images, "--epochs", 1, "--out-dir", tmp_path / "run"))
    (tmp_path / "empty").mkdir()
    for argv, message in [
        (["--out-dir", tmp_path / "run", "--predict", tmp_path / "empty"], "no images"),
        (["--out-dir", tmp_path / "run", "--predict", tmp_path / "missing"], "no such folder"),
        (["--out-dir", tmp_path / "nothing", "--predict", images], "--predict needs --out-dir"),
    ]:
        with pytest.raises(SystemExit) as refused:
            run_main(module, argv)
        err = capsys.readouterr().err  # argparse's refusal comes after the usage lines
        assert refused.value.code == 2 and message in err.strip().splitlines()[-1] and "Traceback" not in err, err
    assert not (tmp_path / "run" / "predictions.csv").exists()


@pytest.mark.parametrize("where", ["train", "val", "predict"])
def test_a_corrupt_image_is_named_in_one_line(tmp_path, where):
    """A file that is not an image: found before training among the training images (their statistics are
    read first), in a DataLoader worker during validation, in one of --predict's workers; one line naming it,
    exit 1, no traceback, and the process ends (its workers with it)."""
    root = make_images(tmp_path / "data")
    project, run = render(tmp_path / "p", "image"), ["--out-dir", tmp_path / "run"]
    if where == "predict":
        assert run_script(project, *TINY, "--epochs", 1, "--data", root, *run).returncode == 0
    bad = root / ("val" if where == "predict" else where) / "green" / "zz-broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not an image" * 10)
    args = ["--predict", root / "val"] if where == "predict" else [*TINY, "--epochs", 2, "--data", root]
    result = run_script(project, *args, "--num-workers", 2, *run, timeout=120)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert f"cannot read the image {bad}" in result.stderr


def test_the_default_data_is_made_once_and_a_short_run_beats_chance(tmp_path, script):
    """The shapes data set, drawn on the first run beside train.py; 6 classes, so chance is 1/6. Four seeded
    epochs of the default model reach well above it (0.5 measured on this machine; the bound leaves room)."""
    module = script(seed=True)
    run_main(module, ["--epochs", 4, "--seed", 0, "--num-workers", 0, "--out-dir", tmp_path / "run"])
    data = module.Path(module.__file__).parent / "data" / "shapes"
    assert sorted(p.name for p in (data / "train").iterdir()) == sorted(module.SHAPES)
    assert len(list(data.rglob("*.png"))) == 6 * 300
    assert float(metrics(tmp_path / "run")[-1]["val_acc"]) > 0.35


def test_two_ranks_accumulating_equal_one_process_with_the_whole_batch_without_batch_norm(tmp_path):
    """torchrun, 2 ranks of 2 micro-batches of 2 images (2 DataLoader workers each; gradients all-reduced at each
    window's end), against 1 process with batches of 8: the same weights, the norm layers replaced by identities
    in the script's text (with them, each rank on a CPU normalises its own share: gloo has no SyncBatchNorm)."""
    from tests.test_ddp import ok, torchrun

    project = render(tmp_path / "p", "image", ddp=True, seed=True, accumulate=True)
    script = project / "train.py"
    script.write_text(script.read_text().replace("nn.BatchNorm2d(", "nn.Identity("))
    images = make_images(tmp_path / "data")
    common = [*TINY, "--data", images, "--epochs", 2, "--seed", 9, "--num-workers", 2]
    ok(torchrun(project, *common, "--batch-size", 2, "--accumulate-steps", 2, "--out-dir", tmp_path / "two"))
    ok(run_script(project, *common, "--batch-size", 8, "--accumulate-steps", 1, "--out-dir", tmp_path / "one"))
    two, one = checkpoint(tmp_path / "two" / "last.pt"), checkpoint(tmp_path / "one" / "last.pt")
    for key, value in one["model"].items():
        torch.testing.assert_close(two["model"][key], value, rtol=1e-5, atol=1e-6, msg=key)
