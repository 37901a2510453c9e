"""The generated training loop against a hand-written one, PyTorch Lightning and Hugging Face
Accelerate, doing the same work.

The work: an MLP classifier; fused AdamW, as the generated script builds it, with warmup then cosine
decay stepped per optimizer step; gradient accumulation over 4 micro-batches; clipping by norm 1.0;
float32; validation every epoch and the best checkpoint kept; 5 epochs. The generated script also
measures validation accuracy, writes a resumable last.pt at every epoch end (atomically, with fsync:
what makes --resume exact) and reloads the best weights at the end; the hand-written loop does that
same work, the way a careful person writes it, and is the reference of every ratio. A second
hand-written loop does only the minimal work (train, validate the loss, save the best), to show what
exact resume costs. Lightning and Accelerate run with their equivalent settings and save only the best.
The hand-written loop runs a second time as a way of its own: its ratio to the first is the noise of
the measurement, against which to read the others.

The ways run in one process, repeated; each repeat runs them in a shuffled order and the next one in
the reverse of that order, so that every way sits as often early as late. The table gives the median
and range of the time per optimizer step (the whole fit divided by its optimizer steps, validation and
checkpoints included) and each way's ratio to the hand-written loop: the median over repeats of the
two ways' times in the same repeat. Three sizes of model and data show how the fixed overhead's share
shrinks as the work grows; the small sizes get more repeats, which cost little and which their noise
needs. Targets: generated / hand-written <= 1.03 at every size; generated / Lightning <= 0.70 on tiny
and small. Writes benchmarks/results/loop_speed.md and loop_speed.png.

    python benchmarks/loop_speed.py               # all sizes (about 30 minutes on 2 cores)
    python benchmarks/loop_speed.py --sizes tiny --repeats 4
    python benchmarks/loop_speed.py --tricks      # what --ema, --compile and the progress bar cost per step

With --tricks it measures, instead, the generated script with --ema, with --compile and with its progress
bar drawn (as on a terminal) against itself without them, per optimizer step after epoch 1 (which holds
the compilation); it writes benchmarks/results/loop_speed_tricks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import gc
import io
import math
import os
import platform
import random
import re
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"

EPOCHS, ACCUMULATE, CLIP, LR, WARMUP = 5, 4, 1.0, 3e-3, 10
SIZES = {
    # features, hidden width, classes, training samples, validation samples, micro-batch
    "tiny": (2, 64, 3, 2000, 500, 64),
    "small": (32, 256, 10, 8000, 1000, 64),
    "medium": (128, 1024, 10, 8000, 1000, 128),
}
REPEATS = {"tiny": 200, "small": 30, "medium": 14}  # a tiny repeat takes 4 s, a medium one 35 s


def make_data(size: str):
    """Random inputs labelled by a fixed random teacher: learnable, the same for every way."""
    features, _, classes, n_train, n_val, _ = SIZES[size]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_train + n_val, features, generator=g)
    teacher = torch.randn(features, classes, generator=g)
    y = (torch.tanh(x) @ teacher).argmax(dim=1)
    return TensorDataset(x[:n_train], y[:n_train]), TensorDataset(x[n_train:], y[n_train:])


def make_loaders(size: str):
    train_set, val_set = make_data(size)
    batch = SIZES[size][5]
    return DataLoader(train_set, batch_size=batch, shuffle=True), DataLoader(val_set, batch_size=batch)


def make_model(size: str) -> nn.Module:
    features, hidden, classes, *_ = SIZES[size]
    return nn.Sequential(nn.Linear(features, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                         nn.Linear(hidden, classes))  # fmt: skip


def optimizer_steps(size: str) -> int:
    _, _, _, n_train, _, batch = SIZES[size]
    return EPOCHS * math.ceil(math.ceil(n_train / batch) / ACCUMULATE)


def schedule(total_steps: int):
    """The generated script's schedule: linear warmup, then cosine decay to a tenth of the peak."""

    def factor(step):
        if step < WARMUP:
            return (step + 1) / WARMUP
        progress = min(1.0, (step - WARMUP) / max(1, total_steps - WARMUP))
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    return factor


def make_optimizer(parameters, size: str):
    """The generated script's optimizer and schedule, for the other ways: (optimizer, scheduler)."""
    optimizer = torch.optim.AdamW(parameters, lr=LR, fused=True)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule(optimizer_steps(size)))


# -----------------------------------------------------------------------------
# the ways


def generated(size: str, out_dir: Path, module) -> None:
    """The rendered train.py's own main(), its seams build_data and build_model pointed at this size."""
    from tests.helpers import run_main

    module.build_data = lambda args: make_loaders(size)
    module.build_model = lambda args: make_model(size)
    argv = ["--epochs", EPOCHS, "--batch-size", SIZES[size][5], "--lr", LR, "--warmup-steps", WARMUP,
            "--accumulate-steps", ACCUMULATE, "--clip-norm", CLIP, "--patience", 100, "--out-dir", out_dir]  # fmt: skip
    run_main(module, argv)


def train_epoch(model, train_loader, optimizer, scheduler) -> None:
    """One epoch as a person writes it, with the same accumulation, clipping and schedule."""
    model.train()
    for i, (x, y) in enumerate(train_loader):
        loss = F.cross_entropy(model(x), y)
        (loss / ACCUMULATE).backward()
        if (i + 1) % ACCUMULATE == 0 or i + 1 == len(train_loader):
            torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()


def validation_loss(model, val_loader) -> float:
    """The mean loss over the validation set, as the minimal and Accelerate loops compute it."""
    model.eval()
    total = torch.zeros(())
    with torch.no_grad():
        for x, y in val_loader:
            total += F.cross_entropy(model(x), y, reduction="sum")
    return total.item() / len(val_loader.dataset)


def validation_loss_and_accuracy(model, val_loader) -> tuple[float, float]:
    """The mean loss and the accuracy over the validation set, as the generated script reports them."""
    model.eval()
    loss, correct = torch.zeros(()), torch.zeros((), dtype=torch.long)
    with torch.no_grad():
        for x, y in val_loader:
            logits = model(x)
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(dim=1) == y).sum()
    return loss.item() / len(val_loader.dataset), correct.item() / len(val_loader.dataset)


def save_atomic(obj, path: Path) -> None:
    """torch.save to a temporary file, fsync, rename: what the generated script guarantees."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def hand_written(size: str, out_dir: Path, module=None) -> None:
    """The generated script's work as a careful person writes it: validation loss and accuracy, a
    resumable last.pt every epoch and best.pt when the loss improves, both atomic and durable, and
    the best weights reloaded at the end. It writes in the main thread, as such scripts do."""
    train_loader, val_loader = make_loaders(size)
    model = make_model(size)
    optimizer, scheduler = make_optimizer(model.parameters(), size)
    best = math.inf
    for epoch in range(1, EPOCHS + 1):
        train_epoch(model, train_loader, optimizer, scheduler)
        val_loss, val_acc = validation_loss_and_accuracy(model, val_loader)
        print(f"epoch {epoch}: val_loss {val_loss:.5f}, val_acc {val_acc:.5f}")
        if val_loss < best:
            best = val_loss
            save_atomic({"model": model.state_dict(), "epoch": epoch, "val_loss": val_loss}, out_dir / "best.pt")
        state = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
        last = {name: obj.state_dict() for name, obj in state.items()}
        save_atomic({**last, "epoch": epoch, "best": best, "rng": torch.get_rng_state()}, out_dir / "last.pt")
    model.load_state_dict(torch.load(out_dir / "best.pt")["model"])


def minimal(size: str, out_dir: Path, module=None) -> None:
    """The least a person writes for the work: train, validate the loss, save the best."""
    train_loader, val_loader = make_loaders(size)
    model = make_model(size)
    optimizer, scheduler = make_optimizer(model.parameters(), size)
    best = math.inf
    for _ in range(EPOCHS):
        train_epoch(model, train_loader, optimizer, scheduler)
        val_loss = validation_loss(model, val_loader)
        if val_loss < best:
            best = val_loss
            torch.save(model.state_dict(), out_dir / "best.pt")


def lightning(size: str, out_dir: Path, module=None) -> None:
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    class Classifier(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.model = make_model(size)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return F.cross_entropy(self.model(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val_loss", F.cross_entropy(self.model(x), y), on_epoch=True)

        def configure_optimizers(self):
            optimizer, scheduler = make_optimizer(self.parameters(), size)
            return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    train_loader, val_loader = make_loaders(size)
    trainer = L.Trainer(
        max_epochs=EPOCHS,
        accelerator="cpu",
        devices=1,
        precision="32-true",
        accumulate_grad_batches=ACCUMULATE,
        gradient_clip_val=CLIP,
        callbacks=[
            EarlyStopping(monitor="val_loss", patience=100),
            ModelCheckpoint(dirpath=out_dir, monitor="val_loss", save_top_k=1),
        ],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(Classifier(), train_loader, val_loader)


def accelerate(size: str, out_dir: Path, module=None) -> None:
    from accelerate import Accelerator

    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=ACCUMULATE, mixed_precision="no")
    train_loader, val_loader = make_loaders(size)
    model = make_model(size)
    optimizer, scheduler = make_optimizer(model.parameters(), size)
    model, optimizer, train_loader, val_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, val_loader, scheduler
    )
    best = math.inf
    for _ in range(EPOCHS):
        model.train()
        for x, y in train_loader:
            with accelerator.accumulate(model):
                loss = F.cross_entropy(model(x), y)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), CLIP)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
        val_loss = validation_loss(model, val_loader)
        if val_loss < best:
            best = val_loss
            accelerator.save(accelerator.unwrap_model(model).state_dict(), out_dir / "best.pt")


CONTROL = "hand-written, again"
WAYS = {
    "generated": generated,
    "hand-written": hand_written,
    "hand-written, best.pt only": minimal,
    "Lightning": lightning,
    "Accelerate": accelerate,
    CONTROL: hand_written,  # its ratio to the hand-written loop is the measurement's own noise
}


# -----------------------------------------------------------------------------
# measuring and reporting


@functools.cache
def render_generated(*tricks: str):
    """The generated script of the benchmark's work (accumulate, clip, early-stop), with `tricks` too."""
    from generator.options import Options
    from generator.render import render_project
    from tests.helpers import load

    options = Options.create(clip=True, accumulate=True, early_stop=True, **dict.fromkeys(tricks, True))
    project = render_project(options, "-".join(["bench", *tricks]), Path(tempfile.mkdtemp()))
    return load(project / "train.py")


def run_order(ways, repeat: int) -> list[str]:
    """The ways in a repeat: a new shuffle on each even repeat, the same one reversed on the odd one after."""
    names = list(ways)
    random.Random(repeat // 2).shuffle(names)
    return names if repeat % 2 == 0 else names[::-1]


def measure(sizes: list[str], repeats: int | None, ways: dict = WAYS, module=None) -> dict:
    """seconds[size][way]: one entry per repeat of ways[way](size, out_dir, module). Each even repeat runs the
    ways in a new shuffled order and the odd one after it in the reverse order, so that no way always follows
    the same other one (which leaves it its garbage) or sits always early or late in a repeat; each timed run
    starts from a collected heap. lm_speed.py measures its ways with it too."""
    module = module or render_generated()
    seconds = {size: {way: [] for way in ways} for size in sizes}
    for size in sizes:
        for run in ways.values():  # one warm-up run each: imports, first-call costs
            with tempfile.TemporaryDirectory() as tmp, quiet():
                run(size, Path(tmp), module)
        count = repeats or REPEATS[size]
        for repeat in range(count):
            for way in run_order(ways, repeat):
                with tempfile.TemporaryDirectory() as tmp, quiet():
                    gc.collect()
                    started = time.perf_counter()
                    ways[way](size, Path(tmp), module)
                    seconds[size][way].append(time.perf_counter() - started)
            print(f"{size} repeat {repeat + 1}/{count}: " + ", ".join(
                f"{way} {seconds[size][way][-1]:.2f}s" for way in ways), flush=True)  # fmt: skip
    return seconds


# the generated script with one more trick, against itself without: what the trick costs per step
TRICK_WAYS = {
    "generated": (),
    "generated --ema": ("ema",),
    "generated --compile": ("compile",),
    "generated, progress bar drawn": (),  # as on a terminal: the bar drawn (to /dev/null), the loss read every 10 steps
}


@contextlib.contextmanager
def bar_drawn(module, way: str):
    """For the progress bar's way, the script's tqdm drawing as it does on a terminal."""
    if "progress bar" not in way:
        yield
        return
    plain = module.tqdm
    with open(os.devnull, "w") as devnull:
        module.tqdm = lambda *args, **kwargs: plain(*args, **{**kwargs, "disable": False, "file": devnull})
        try:
            yield
        finally:
            module.tqdm = plain


def measure_tricks(sizes: list[str], repeats: int) -> dict:
    """seconds[size][way]: per repeat, the time per optimizer step of epochs 2 to 5, from the run's
    metrics.csv (epoch 1 holds the compilation, which compile_s gives); ways in a shuffled order, then
    reversed, as measure() does. Each compiled run starts from a fresh dynamo cache, as a new process does."""
    import torch._dynamo

    per_step = {size: {way: [] for way in TRICK_WAYS} for size in sizes}
    compile_s = {size: [] for size in sizes}  # inductor's on-disk cache warm, as on a second run
    first_compile_s = {size: [] for size in sizes}  # the warm-up's: the cache as this machine had it
    for size in sizes:
        steps = optimizer_steps(size) * (EPOCHS - 1) / EPOCHS
        for repeat in range(repeats + 1):  # repeat 0 warms up: imports, inductor's code cache
            for way in run_order(TRICK_WAYS, repeat):
                torch._dynamo.reset()
                out = io.StringIO()
                with tempfile.TemporaryDirectory() as tmp, quiet(), contextlib.redirect_stdout(out):
                    gc.collect()
                    module = render_generated(*TRICK_WAYS[way])
                    with bar_drawn(module, way):
                        generated(size, Path(tmp), module)
                    with open(Path(tmp) / "metrics.csv", newline="") as f:
                        seconds = sum(float(row["epoch_time_s"]) for row in list(csv.DictReader(f))[1:])
                took = [float(s) for s in re.findall(r"compiling took ([\d.]+) s", out.getvalue())]
                if repeat:
                    per_step[size][way].append(seconds / steps)
                    compile_s[size] += took
                else:
                    first_compile_s[size] += took
            if repeat:
                print(f"{size} repeat {repeat}/{repeats}: " + ", ".join(
                    f"{way} {1000 * per_step[size][way][-1]:.2f} ms" for way in TRICK_WAYS), flush=True)  # fmt: skip
    return {"per_step": per_step, "compile_s": compile_s, "first_compile_s": first_compile_s}


def report_tricks(measured: dict) -> str:
    per_step, compile_s, first = measured["per_step"], measured["compile_s"], measured["first_compile_s"]
    repeats = len(next(iter(per_step.values()))["generated"])
    lines = [
        (
            f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; the generated script (accumulation {ACCUMULATE}, clip {CLIP}, "
            f"early stopping, float32) with one more trick, or with its progress bar drawn; {repeats} repeats, "
            "the ways in a shuffled order, "
            f"then in the reverse order. Time per optimizer step over epochs 2 to {EPOCHS} (validation and "
            "checkpoints included), from metrics.csv; epoch 1 holds the compilation, given apart: the first run's "
            "(inductor's on-disk cache as this machine had it), then the others' (cache warm). Ratio: "
            "the median over repeats of the trick's time over the generated script's in the same repeat."
        ),
        "",
        "| size | way | ms per optimizer step (median, range) | ratio to generated "
        "| compile s: first run, then median |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size, ways in per_step.items():
        for way, values in ways.items():
            compiled = "-"
            if "compile" in way and compile_s[size]:
                compiled = f"{sum(first[size]):.1f}, then {statistics.median(compile_s[size]):.1f}"
            lines.append(
                f"| {size} | {way} | {1000 * statistics.median(values):.2f} ({1000 * min(values):.2f}-"
                f"{1000 * max(values):.2f}) | {ratio(values, ways['generated']):.3f} | {compiled} |"
            )
    return "\n".join(lines) + "\n"


@contextlib.contextmanager
def quiet():
    """Silence the ways' printing and logging, which would otherwise be timed too."""
    import logging

    logging.disable(logging.WARNING)
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(io.StringIO()),
        contextlib.redirect_stderr(io.StringIO()),
    ):
        warnings.simplefilter("ignore")
        yield
    logging.disable(logging.NOTSET)


def ratio(times: list[float], base: list[float]) -> float:
    """The median over repeats of one way's time over another's in the same repeat: paired, so that
    the machine's drift from one repeat to the next cancels out."""
    return statistics.median(t / b for t, b in zip(times, base, strict=True))


def report(seconds: dict) -> str:
    repeats = ", ".join(f"{size} {len(ways['generated'])}" for size, ways in seconds.items())
    lines = [
        (
            f"{platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; {EPOCHS} epochs, accumulation {ACCUMULATE}, clip {CLIP}, "
            f"float32; repeats: {repeats}, the ways in a shuffled order, then in the reverse order. Ratios: "
            "the median over repeats of the two ways' times in the same repeat."
        ),
        "",
        "| size | way | ms per optimizer step (median, range) | ratio to hand-written |",
        "| --- | --- | --- | --- |",
    ]
    for size, ways in seconds.items():
        steps = optimizer_steps(size)
        for way, values in ways.items():
            median = statistics.median(values)
            lines.append(
                f"| {size} | {way} | {1000 * median / steps:.2f} ({1000 * min(values) / steps:.2f}-"
                f"{1000 * max(values) / steps:.2f}) | {ratio(values, ways['hand-written']):.3f} |"
            )
    others = [way for way in WAYS if way not in ("generated", CONTROL)]
    targets = {"hand-written": " (target <= 1.03)", "Lightning": " (target <= 0.70 on tiny and small)"}
    lines += [
        "",
        "| size | "
        + " | ".join(f"generated / {way}{targets.get(way, '')}" for way in others)
        + f" | noise: {CONTROL} / hand-written |",
        "| --- |" + " --- |" * (len(others) + 1),
    ]
    for size, ways in seconds.items():
        ratios = [ratio(ways["generated"], ways[way]) for way in others] + [ratio(ways[CONTROL], ways["hand-written"])]
        lines.append(f"| {size} | " + " | ".join(f"{r:.3f}" for r in ratios) + " |")
    return "\n".join(lines) + "\n"


def chart(seconds: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(WAYS)
    for i, way in enumerate(WAYS):
        ratios = [ratio(ways[way], ways["hand-written"]) for ways in seconds.values()]
        ax.bar([x + i * width for x in range(len(seconds))], ratios, width, label=way)
    ax.axhline(1.0, color="gray", linewidth=0.8)
    ax.set_xticks([x + width * (len(WAYS) - 1) / 2 for x in range(len(seconds))], list(seconds))
    ax.set(ylabel="time / hand-written loop's time", title="Each way against the hand-written loop (lower is faster)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, help=f"repeats at every size (default: {REPEATS}; --tricks: 6)")
    parser.add_argument(
        "--tricks", action="store_true", help="instead: the cost of --ema, --compile and the progress bar per step"
    )
    args = parser.parse_args()
    if args.tricks:
        text = report_tricks(measure_tricks(args.sizes, args.repeats or 6))
        print(text)
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "loop_speed_tricks.md").write_text(text)
        print(f"wrote {RESULTS / 'loop_speed_tricks.md'}")
        return
    seconds = measure(args.sizes, args.repeats)
    text = report(seconds)
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "loop_speed.md").write_text(text)
    chart(seconds, RESULTS / "loop_speed.png")
    print(f"wrote {RESULTS / 'loop_speed.md'} and {RESULTS / 'loop_speed.png'}")


if __name__ == "__main__":
    main()
