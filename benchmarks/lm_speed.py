"""The generated language-model script against a hand-written GPT loop doing the same work, in tokens per
second; and what --compile buys it on this CPU.

The work, at two sizes: the generated script's GPT (the same class for both ways: this measures the loop,
not the model) on the default text (Python's standard library, read and encoded in each run), fused AdamW
with betas (0.9, 0.99) and weight decay on the weights, warmup then cosine decay stepped per optimizer
step, batches of random windows drawn from a generator of their own (the same draws in both ways), float32,
3 epochs. After each epoch both ways score the same validation windows, sample the same number of
characters from a seeded generator, append a metrics row and write a resumable last.pt (atomically, with
fsync: what makes --resume exact). The hand-written loop is written the way a careful person writes it,
after nanoGPT's train.py; it is the reference of the ratio.

The ways run in one process, repeated; each repeat runs them in a shuffled order and the next one in the
reverse order (as loop_speed.py). Tokens per second: the training tokens over the whole fit's time (data,
validation, samples and checkpoints included). The ratio: the median over repeats of the generated
script's time over the hand-written loop's in the same repeat. Target: <= 1.03 at both sizes.

With --compile: the generated script with --compile against itself without, from metrics.csv's
tokens_per_s (the training loop alone) over the epochs after the first, which holds the compilation.
Writes benchmarks/results/lm_speed.md.

    python benchmarks/lm_speed.py                    # both sizes, 6 repeats (about 8 minutes on 2 cores)
    python benchmarks/lm_speed.py --compile          # the compiled speed-up (about 5 minutes)
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import functools
import io
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from loop_speed import measure, quiet, ratio, run_order, save_atomic  # loop_speed.py's pairing, order, save

RESULTS = ROOT / "benchmarks" / "results"
EPOCHS, STEPS, LR, WARMUP, SAMPLE = 3, 40, 1e-3, 10, 200
SIZES = {
    # options of the generated script: the model and its batches
    "small": ["--n-layer", "2", "--n-head", "2", "--n-embd", "64", "--block-size", "64", "--batch-size", "16"],
    "default": [],  # the script's defaults: 4 layers of 128, block 64, batches of 32
}


@functools.cache
def render_generated(*tricks: str):
    from generator.options import Options
    from generator.render import render_project
    from tests.helpers import load

    options = Options.create("lm", seed=True, **dict.fromkeys(tricks, True))
    project = render_project(options, "-".join(["lm-bench", *tricks]), Path(tempfile.mkdtemp()))
    return load(project / "train.py")


def options(size: str) -> list[str]:
    common = ["--epochs", EPOCHS, "--steps-per-epoch", STEPS, "--lr", LR, "--warmup-steps", WARMUP, "--seed", 0]
    return [*map(str, common), *SIZES[size]]


def generated(size: str, out_dir: Path, module) -> None:
    module.main([*options(size), "--out-dir", str(out_dir)])


def hand_written(size: str, out_dir: Path, module) -> None:
    """nanoGPT's loop, doing the generated script's work."""
    args = module.parse_args(options(size))
    torch.manual_seed(args.seed)
    text = module.default_text()
    vocab = sorted(set(text))
    index = {char: i for i, char in enumerate(vocab)}
    data = torch.tensor([index[char] for char in text])
    train_data, val_data = data[: int(0.9 * len(data))], data[int(0.9 * len(data)) :]
    windows = train_data.unfold(0, args.block_size + 1, 1)
    starts = torch.linspace(0, len(val_data) - args.block_size - 1, args.eval_windows).long()
    val_windows = torch.stack([val_data[i : i + args.block_size + 1] for i in starts.tolist()])
    model = module.GPT(args, len(vocab))
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": args.weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.99), fused=True)
    total = args.epochs * args.steps_per_epoch

    def lr_factor(step):
        if step < args.warmup_steps:
            return (step + 1) / args.warmup_steps
        progress = min(1.0, (step - args.warmup_steps) / max(1, total - args.warmup_steps))
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
    generator = torch.Generator().manual_seed(args.seed)
    rows = []
    for epoch in range(1, args.epochs + 1):
        started = time.time()
        model.train()
        losses = []
        for _ in range(args.steps_per_epoch):
            batch = windows[torch.randint(len(windows), (args.batch_size,), generator=generator)]
            loss = F.cross_entropy(model(batch[:, :-1]).flatten(0, 1), batch[:, 1:].flatten())
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            losses.append(loss.detach())
        train_loss = torch.stack(losses).mean().item()
        model.eval()
        with torch.no_grad():
            total_loss = sum(
                F.cross_entropy(model(w[:, :-1]).flatten(0, 1), w[:, 1:].flatten(), reduction="sum").item()
                for w in val_windows.split(args.batch_size)
            )
            val_loss = total_loss / val_windows[:, 1:].numel()
            sampler = torch.Generator().manual_seed(0)
            tokens = torch.tensor([[index[char] for char in args.prompt or "\n"]])  # the script's default: a newline
            for _ in range(args.sample_length):
                logits = model(tokens[:, -args.block_size :])[:, -1] / args.temperature
                tokens = torch.cat([tokens, torch.multinomial(logits.softmax(-1), 1, generator=sampler)], dim=1)
        (out_dir / "samples.txt").write_text("".join(vocab[i] for i in tokens[0].tolist()))
        rows.append({"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "time": time.time() - started})
        with open(out_dir / "metrics.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        state = {"model": model, "optimizer": optimizer, "scheduler": scheduler}
        checkpoint = {name: obj.state_dict() for name, obj in state.items()}
        save_atomic({**checkpoint, "generator": generator.get_state(), "epoch": epoch}, out_dir / "last.pt")


WAYS = {"generated": generated, "hand-written": hand_written}


def training_tokens(size: str, module) -> int:
    args = module.parse_args(options(size))
    return args.epochs * args.steps_per_epoch * args.batch_size * args.block_size


def report(seconds: dict) -> str:
    module = render_generated()
    repeats = ", ".join(f"{size} {len(ways['generated'])}" for size, ways in seconds.items())
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}"
    threads = f"{torch.get_num_threads()} threads; {EPOCHS} epochs of {STEPS} steps; repeats: {repeats}"
    lines = [
        f"# Language-model loop speed\n\n{machine}, {threads}\n",
        "| size | tokens/s, generated | tokens/s, hand-written | generated / hand-written time (target <= 1.03) |",
        "| --- | --- | --- | --- |",
    ]
    for size, ways in seconds.items():
        tokens = training_tokens(size, module)
        rates = {way: f"{tokens / statistics.median(values):,.0f}" for way, values in ways.items()}
        lines.append(
            f"| {size} | {rates['generated']} | {rates['hand-written']} "
            f"| {ratio(ways['generated'], ways['hand-written']):.3f} |"
        )
    return "\n".join(lines) + "\n"


def measure_compile(sizes: list[str], repeats: int) -> str:
    """tokens_per_s of epochs 2 on, compiled and eager, paired by repeat; the compile time of epoch 1."""
    ways = {"eager": render_generated(), "compiled": render_generated("compile")}
    lines = [
        "| size | tokens/s, eager | tokens/s, compiled | speed-up | compile time (s) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for size in sizes:
        rates, compile_s = {way: [] for way in ways}, []
        for repeat in range(repeats):
            for way in run_order(ways, repeat):
                with tempfile.TemporaryDirectory() as tmp:
                    printed = io.StringIO()
                    with quiet(), contextlib.redirect_stdout(printed):  # the compile time it prints
                        generated(size, Path(tmp), ways[way])
                    with open(Path(tmp) / "metrics.csv", newline="") as f:
                        rates[way].append(
                            statistics.mean(float(row["tokens_per_s"]) for row in list(csv.DictReader(f))[1:])
                        )
                    if way == "compiled":
                        compile_s.append(float(printed.getvalue().split("compiling took ")[1].split(" s")[0]))
            print(
                f"{size} {repeat + 1}/{repeats}: " + ", ".join(f"{w} {r[-1]:,.0f} tokens/s" for w, r in rates.items())
            )
        speedup = statistics.median(c / e for c, e in zip(rates["compiled"], rates["eager"], strict=True))
        lines.append(
            f"| {size} | {statistics.median(rates['eager']):,.0f} | {statistics.median(rates['compiled']):,.0f} "
            f"| {speedup:.3f} | {compile_s[0]:.1f} (once per process: later runs in it reuse the compiled code) |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", choices=list(SIZES), default=list(SIZES))
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--compile", action="store_true", help="instead: the compiled script against the eager one")
    args = parser.parse_args()
    if args.compile:
        text = "# --compile on the language model\n\n" + measure_compile(args.sizes, args.repeats)
        name = "lm_compile.md"
    else:
        text = report(measure(args.sizes, args.repeats, WAYS, render_generated()))
        name = "lm_speed.md"
    print(text)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / name).write_text(text)
    print(f"wrote {RESULTS / name}")


if __name__ == "__main__":
    main()
