"""The image task's speed: the generated script against a careful hand-written loop doing the same work, where
the time goes, and the number of DataLoader workers that is fastest here.

The work, both ways: the default data set (data/shapes, 1,440 training and 360 validation PNG files), decoded
with Pillow by --num-workers processes, augmented (random resized crop, flip) and normalised by the same
functions (the hand-written loop imports them from the rendered script, and its ResNet); fused AdamW with the
weight-decay groups, warmup then cosine stepped per optimizer step; validation every epoch; a checkpoint of the
model, optimizer and scheduler written every epoch. The generated script adds what its guarantees need: the
run's own data order and per-sample random streams, last.pt with fsync on a writer thread, metrics.csv. The
hand-written loop shuffles with the DataLoader and saves with torch.save.

Each repeat runs both ways, in alternating order, for --epochs epochs; the time is the training loop's
(images per second over the epochs after the first, which starts the workers), and the ratio is the median over
repeats of the two ways' times in the same repeat. Both time an epoch's training and validation (the script's
epoch_time_s); the checkpoints are written between epochs, on the script's writer thread. Target: generated /
hand-written <= 1.03.

    python benchmarks/image_speed.py                     # two sizes, 3 repeats, then workers and breakdown
    python benchmarks/image_speed.py --repeats 1 --sizes small
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.helpers import load, render  # noqa: E402

SIZES = {"small": ["--image-size", "32", "--width", "16"], "larger": ["--image-size", "48", "--width", "24"]}


def options(module, size, workers, epochs):
    return module.parse_args([*SIZES[size], "--num-workers", str(workers), "--epochs", str(epochs)])


def generated(module, out, size, workers, epochs):
    """Seconds over epochs 2.. of the generated script (epoch_time_s in its metrics.csv: training and validation),
    and how many epochs."""
    argv = [*SIZES[size], "--num-workers", str(workers), "--epochs", str(epochs), "--out-dir", str(out)]
    with contextlib.redirect_stdout(io.StringIO()):
        module.main(argv)

    with open(out / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))[1:]
    return sum(float(row["epoch_time_s"]) for row in rows), len(rows)


def hand_written(module, out, size, workers, epochs):
    """The same work written plainly: DataLoader shuffling, a loop, validation, torch.save every epoch."""
    import torch.nn.functional as F
    from torch.utils.data import DataLoader

    args = options(module, size, workers, epochs)
    with contextlib.redirect_stdout(io.StringIO()):
        root = module.make_shapes(Path(module.__file__).parent / "data" / "shapes")
    train_files, val_files, classes = module.find_images(root)
    mean, std = module.channel_stats([path for path, _ in train_files], args.image_size)
    info = {"classes": classes, "mean": mean, "std": std}
    kwargs = {"batch_size": args.batch_size, "num_workers": workers, "persistent_workers": workers > 0}
    train_loader = DataLoader(module.ImageFiles(train_files, module.augment, args.image_size, info), shuffle=True,
                              **kwargs)  # fmt: skip
    val_loader = DataLoader(module.ImageFiles(val_files, module.center, args.image_size, info), **kwargs)
    model = module.build_model(args, len(classes))
    optimizer = module.build_optimizer(model, args)
    scheduler = module.build_scheduler(optimizer, args, epochs * len(train_loader))
    seconds = 0.0
    for epoch in range(1, epochs + 1):
        started = time.time()
        model.train()
        for x, y in train_loader:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
        model.eval()
        with torch.no_grad():
            correct = sum((model(x).argmax(1) == y).sum().item() for x, y in val_loader)
        if epoch > 1:
            seconds += time.time() - started  # training and validation, as the script's epoch_time_s
        state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch, "acc": correct}
        torch.save({**state, "scheduler": scheduler.state_dict()}, out / "last.pt")
    return seconds, epochs - 1


def breakdown(module, size):
    """Milliseconds per image of decoding, of the training view (augment, tensor, normalise), and of the model's
    forward and backward pass on a batch of 64, on this process's threads."""
    args = options(module, size, 0, 1)
    root = module.make_shapes(Path(module.__file__).parent / "data" / "shapes")
    files = [path for path, _ in module.find_images(root)[0]][:300]
    started = time.perf_counter()
    images = [module.load_image(path, args.image_size) for path in files]
    decode = (time.perf_counter() - started) / len(files)
    started = time.perf_counter()
    for image in images:
        module.pixels(module.augment(image, args.image_size))
    view = (time.perf_counter() - started) / len(files)
    model = module.build_model(args, 6)
    x, y = torch.randn(64, 3, args.image_size, args.image_size), torch.randint(0, 6, (64,))
    for _ in range(2):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    started = time.perf_counter()
    for _ in range(5):
        torch.nn.functional.cross_entropy(model(x), y).backward()
    step = (time.perf_counter() - started) / (5 * 64)
    return {"decode": decode * 1e3, "augment": view * 1e3, "model": step * 1e3}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="This DataLoader will create")  # 3 workers on 2 cores, on purpose
    tmp = Path(tempfile.mkdtemp(prefix="image-speed-"))
    module = load(render(tmp / "project", "image") / "train.py")
    print(f"torch {torch.__version__}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, "
          f"{args.workers} workers, {args.epochs} epochs (timed: 2..)")  # fmt: skip
    print("\n| size | generated images/s | hand-written images/s | generated / hand-written (median, range) |")
    print("| --- | --- | --- | --- |")
    for size in args.sizes:
        ratios, rates = [], {"generated": [], "hand": []}
        for repeat in range(args.repeats):
            order = [("generated", generated), ("hand", hand_written)]
            times = {}
            for name, way in order if repeat % 2 == 0 else order[::-1]:
                out = tmp / f"{size}-{name}-{repeat}"
                out.mkdir()
                seconds, epochs = way(module, out, size, args.workers, args.epochs)
                times[name] = seconds
                rates[name].append(1440 * epochs / seconds)
            ratios.append(times["generated"] / times["hand"])
        print(f"| {size} ({' '.join(SIZES[size])}) | {statistics.median(rates['generated']):.0f} | "
              f"{statistics.median(rates['hand']):.0f} | {statistics.median(ratios):.3f} "
              f"({min(ratios):.3f}-{max(ratios):.3f}) |")  # fmt: skip
    print("\n| --num-workers | images/s (generated, small) |\n| --- | --- |")
    for workers in (0, 1, 2, 3):
        out = tmp / f"workers-{workers}"
        seconds, epochs = generated(module, out, "small", workers, args.epochs)
        print(f"| {workers} | {1440 * epochs / seconds:.0f} |")
    print("\n| size | decode ms/image | augment ms/image | model ms/image (forward + backward) |")
    print("| --- | --- | --- | --- |")
    for size in args.sizes:
        parts = breakdown(module, size)
        print(f"| {size} | {parts['decode']:.3f} | {parts['augment']:.3f} | {parts['model']:.3f} |")


if __name__ == "__main__":
    main()
