"""On a CUDA machine: a mid-size model trained by the rendered script without --amp, with --amp in
float16 (GradScaler) and in bfloat16, and compiled (--compile) in float32 and bfloat16; prints the
speed-up and the final losses side by side. Then the language model (--task lm) at nanoGPT's
shakespeare_char size, in float32, bfloat16 and bfloat16 compiled: tokens per second and the model FLOPs
utilisation (nanoGPT's estimate, against the GPU's bfloat16 peak: PEAK_TFLOPS, else a known GPU's). Then the
image classifier (--task image): images per second in float32 and with --amp (channels_last on CUDA).
Run it through benchmarks/gpu_check.sh; the test suite never needs a GPU."""

import contextlib
import io
import math
import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.options import Options
from generator.render import render_project
from tests.helpers import load, metrics

WIDTH, FEATURES, CLASSES, SAMPLES, BATCH, EPOCHS = 8192, 1024, 100, 65536, 1024, 3


class DeviceBatches:
    """Batches cut from tensors already on the GPU: the DataLoader's per-sample indexing on the CPU
    would otherwise be what the check times."""

    generator = None  # shuffles with torch's generator, as the script's checkpoint expects

    def __init__(self, x, y, shuffle):
        self.x, self.y, self.shuffle = x.cuda(), y.cuda(), shuffle
        self.sampler = range(len(x))  # the script divides the epoch's summed loss by len(loader.sampler)

    def __len__(self):
        return math.ceil(len(self.x) / BATCH)

    def __iter__(self):
        order = torch.randperm(len(self.x), device="cuda") if self.shuffle else torch.arange(len(self.x), device="cuda")
        for start in range(0, len(self.x), BATCH):
            index = order[start : start + BATCH]
            yield self.x[index], self.y[index]


def build_data(args):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES + 8192, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, CLASSES, generator=g)).argmax(dim=1)
    return DeviceBatches(x[:SAMPLES], y[:SAMPLES], True), DeviceBatches(x[SAMPLES:], y[SAMPLES:], False)


def build_model(args):
    return nn.Sequential(nn.Linear(FEATURES, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH), nn.GELU(),
                         nn.Linear(WIDTH, WIDTH), nn.GELU(), nn.Linear(WIDTH, CLASSES))  # fmt: skip


def run(module, extra, out_dir, epochs=EPOCHS):
    """One run of the rendered main; returns its wall time, its epochs' times after the first (CUDA's
    and cuBLAS's start-up fall in the first) and its last metrics row."""
    module.build_data, module.build_model = build_data, build_model
    handler = signal.getsignal(signal.SIGINT)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        module.main(["--epochs", str(epochs), "--seed", "0", "--lr", "1e-3", "--out-dir", str(out_dir), *extra])
    torch.cuda.synchronize()
    signal.signal(signal.SIGINT, handler)
    rows = metrics(out_dir, drop=set())
    return time.perf_counter() - started, [float(row["epoch_time_s"]) for row in rows[1:]], rows[-1]


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: nothing to check")
    tmp = Path(tempfile.mkdtemp())
    plain = load(render_project(Options.create(seed=True), "plain", tmp) / "train.py")
    mixed = load(render_project(Options.create(seed=True, amp=True), "amp", tmp) / "train.py")
    compiled = load(render_project(Options.create(seed=True, compile=True), "compiled", tmp) / "train.py")
    compiled_mixed = load(render_project(Options.create(seed=True, amp=True, compile=True), "both", tmp) / "train.py")
    # the compiled rows' epoch times leave compilation out: it happens in epoch 1
    cases = [("float32", plain, []), ("amp float16 + GradScaler", mixed, ["--amp-dtype", "float16"]),
             ("amp bfloat16", mixed, ["--amp-dtype", "bfloat16"]), ("float32 + compile", compiled, []),
             ("amp bfloat16 + compile", compiled_mixed, ["--amp-dtype", "bfloat16"])]  # fmt: skip
    run(plain, [], tmp / "warm-up", epochs=1)  # CUDA's context, cuBLAS handles, the allocator's pool
    results = {}
    for case, (name, module, extra) in enumerate(cases):
        walls, epoch_times = [], []
        for repeat in range(2):
            wall, times, last = run(module, extra, tmp / f"case{case}-{repeat}")
            walls.append(wall)
            epoch_times += times
        results[name] = (statistics.median(epoch_times), statistics.median(walls), last)
    base = results["float32"][0]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {EPOCHS} epochs of a {WIDTH}-wide MLP,")
    print(f"{SAMPLES} samples, batch {BATCH}; epoch: median seconds of training and validation after epoch 1")
    print(
        f"{'':26s} {'epoch s':>8s} {'speed-up':>9s} {'run s':>6s} {'train_loss':>11s} {'val_loss':>9s} {'skipped':>8s}"
    )
    for name, (epoch, wall, last) in results.items():
        print(f"{name:26s} {epoch:8.3f} {base / epoch:8.2f}x {wall:6.1f} {float(last['train_loss']):11.4f} "
              f"{float(last['val_loss']):9.4f} {last.get('skipped_steps', '-'):>8s}")  # fmt: skip

    lm_rows(tmp)
    image_rows(tmp)


# nanoGPT's shakespeare_char model: 6 layers of 384, 6 heads, 256 characters of context, batches of 64
LM = ["--n-layer", "6", "--n-head", "6", "--n-embd", "384", "--block-size", "256", "--batch-size", "64"]
PEAKS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12}  # dense bfloat16 FLOP/s


def lm_rows(tmp: Path) -> None:
    """tokens/s of the epochs after the first (which holds the compilation) and the model FLOPs utilisation."""
    name = torch.cuda.get_device_name()
    peak = float(os.environ.get("PEAK_TFLOPS", "0")) * 1e12 or next((v for k, v in PEAKS.items() if k in name), 0)
    plain = load(render_project(Options.create("lm", seed=True), "lm", tmp) / "train.py")
    mixed = load(render_project(Options.create("lm", seed=True, amp=True), "lm-amp", tmp) / "train.py")
    both = load(render_project(Options.create("lm", seed=True, amp=True, compile=True), "lm-both", tmp) / "train.py")
    args = plain.parse_args(LM)
    model = plain.build_model(args, 100)
    n = sum(p.numel() for p in model.parameters())
    # nanoGPT's estimate: 6 FLOPs per parameter per token, and attention's 12 * layers * width * context
    flops_per_token = 6 * n + 12 * args.n_layer * args.n_embd * args.block_size
    print(f"\n--task lm, {n / 1e6:.1f}M parameters ({' '.join(LM)}); tokens/s after epoch 1,", end=" ")
    print(f"MFU of {peak / 1e12:.0f} TFLOP/s")
    for label, module, extra in [("float32", plain, []), ("amp bfloat16", mixed, ["--amp-dtype", "bfloat16"]),
                                 ("amp bfloat16 + compile", both, ["--amp-dtype", "bfloat16"])]:  # fmt: skip
        out = tmp / label.replace(" ", "-")
        with contextlib.redirect_stdout(io.StringIO()):
            module.main([*LM, "--epochs", "3", "--steps-per-epoch", "50", "--seed", "0", "--out-dir", str(out), *extra])
        rows = metrics(out, drop=set())
        rate = statistics.median(float(row["tokens_per_s"]) for row in rows[1:])
        mfu = f"{rate * flops_per_token / peak:.1%}" if peak else "-"
        print(f"{label:26s} {rate:12,.0f} tokens/s  MFU {mfu:>6s}  val_bpc {float(rows[-1]['val_bpc']):.3f}")


def image_rows(tmp: Path) -> None:
    """--task image on its default data at 64x64 with a ResNet of width 64: images/s after epoch 1, in float32
    and with --amp (bfloat16, channels_last: the script puts the model and the batches in that layout on CUDA)."""
    plain = load(render_project(Options.create("image", seed=True), "image", tmp) / "train.py")
    mixed = load(render_project(Options.create("image", seed=True, amp=True), "image-amp", tmp) / "train.py")
    size = ["--image-size", "64", "--width", "64", "--depth", "2", "--batch-size", "256", "--num-workers", "8"]
    print(f"\n--task image ({' '.join(size)}); images/s after epoch 1")
    for label, module, extra in [
        ("float32", plain, []),
        ("amp bfloat16, channels_last", mixed, ["--amp-dtype", "bfloat16"]),
    ]:
        out = tmp / label.split(",")[0].replace(" ", "-")
        with contextlib.redirect_stdout(io.StringIO()):
            module.main([*size, "--epochs", "3", "--seed", "0", "--out-dir", str(out), *extra])
        rows = metrics(out, drop=set())
        rate = statistics.median(float(row["images_per_s"]) for row in rows[1:])
        print(f"{label:30s} {rate:10,.0f} images/s  val_acc {float(rows[-1]['val_acc']):.3f}")


if __name__ == "__main__":
    main()
