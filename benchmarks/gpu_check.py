"""On a CUDA machine: a mid-size model trained by the rendered script without --amp, with --amp in
float16 (GradScaler) and in bfloat16; prints the speed-up and the final losses side by side.
Run it through benchmarks/gpu_check.sh; the test suite never needs a GPU."""

import contextlib
import io
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.options import Options
from generator.render import render_project
from tests.helpers import load, metrics

WIDTH, FEATURES, CLASSES, SAMPLES, BATCH, EPOCHS = 4096, 1024, 100, 65536, 1024, 3


def build_data(args):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(SAMPLES + 8192, FEATURES, generator=g)
    y = (x @ torch.randn(FEATURES, CLASSES, generator=g)).argmax(dim=1)
    train, val = TensorDataset(x[:SAMPLES], y[:SAMPLES]), TensorDataset(x[SAMPLES:], y[SAMPLES:])
    return (DataLoader(train, batch_size=BATCH, shuffle=True, pin_memory=True),
            DataLoader(val, batch_size=BATCH, pin_memory=True))  # fmt: skip


def build_model(args):
    return nn.Sequential(nn.Linear(FEATURES, WIDTH), nn.GELU(), nn.Linear(WIDTH, WIDTH), nn.GELU(),
                         nn.Linear(WIDTH, WIDTH), nn.GELU(), nn.Linear(WIDTH, CLASSES))  # fmt: skip


def run(module, extra, out_dir):
    module.build_data, module.build_model = build_data, build_model
    handler = signal.getsignal(signal.SIGINT)
    started = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        module.main(["--epochs", str(EPOCHS), "--seed", "0", "--lr", "1e-3", "--out-dir", str(out_dir), *extra])
    torch.cuda.synchronize()
    signal.signal(signal.SIGINT, handler)
    rows = metrics(out_dir)
    return time.perf_counter() - started, rows[-1]


def main() -> None:
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: nothing to check")
    tmp = Path(tempfile.mkdtemp())
    plain = load(render_project(Options.create(seed=True), "plain", tmp) / "train.py")
    mixed = load(render_project(Options.create(seed=True, amp=True), "amp", tmp) / "train.py")
    cases = [("float32", plain, []), ("amp float16 + GradScaler", mixed, ["--amp-dtype", "float16"]),
             ("amp bfloat16", mixed, ["--amp-dtype", "bfloat16"])]  # fmt: skip
    results = {}
    for name, module, extra in cases:
        times = []
        for repeat in range(2):
            seconds, last = run(module, extra, tmp / f"{name.split()[0]}-{len(extra)}-{repeat}")
            times.append(seconds)
        results[name] = (statistics.median(times), last)
    base = results["float32"][0]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {EPOCHS} epochs of a {WIDTH}-wide MLP")
    print(f"{'':28s} {'seconds':>8s} {'speed-up':>9s} {'train_loss':>11s} {'val_loss':>9s} {'skipped':>8s}")
    for name, (seconds, last) in results.items():
        print(f"{name:28s} {seconds:8.1f} {base / seconds:8.2f}x {float(last['train_loss']):11.4f} "
              f"{float(last['val_loss']):9.4f} {last.get('skipped_steps', '-'):>8s}")  # fmt: skip


if __name__ == "__main__":
    main()
