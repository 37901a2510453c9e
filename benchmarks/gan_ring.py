"""Sample quality on the 8-Gaussian ring: WGAN-GP, WGAN-GP with --amp (bfloat16), WGAN-GP with --ema
(samples from the generator's average) and the plain GAN, each rendered by tricks and run with its
default settings for a few seeds.

Prints modes covered and high-quality share side by side (the run's best epoch, which early stopping
reloads), writes benchmarks/results/gan_ring.md and draws every variant's samples in one figure,
benchmarks/results/gan_ring.png. Target: `tricks new --amp --gp --early-stop`'s default run covers
all 8 modes with at least 70% of samples within 3 standard deviations of a centre.

    python benchmarks/gan_ring.py                 # seeds 0 1 2, a few minutes per bfloat16 run on CPU
    python benchmarks/gan_ring.py --seeds 0 --variants wgan-gp
"""

from __future__ import annotations

import argparse
import csv
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.options import Options
from generator.render import render_project

RESULTS = ROOT / "benchmarks" / "results"
VARIANTS = {
    "wgan-gp": ("WGAN-GP", Options.create(gp=True, seed=True, early_stop=True), []),
    "wgan-gp-amp": (
        "WGAN-GP --amp (bfloat16)",
        Options.create(gp=True, amp=True, seed=True, early_stop=True),
        ["--amp-dtype", "bfloat16"],
    ),
    "wgan-gp-ema": ("WGAN-GP --ema", Options.create(gp=True, ema=True, seed=True, early_stop=True), []),
    "plain": ("plain GAN (no --gp)", Options.create("gan", seed=True, early_stop=True), []),
}


def run(project: Path, seed: int, extra: list[str], out_dir: Path) -> dict:
    """One default run; returns the best epoch's row and the wall time."""
    started = time.perf_counter()
    command = [sys.executable, "train.py", "--seed", str(seed), "--out-dir", str(out_dir), *extra]
    subprocess.run(command, cwd=project, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    with open(out_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    best = max(rows, key=lambda row: float(row["hq_fraction"]))
    return {
        "seed": seed,
        "epochs": len(rows),
        "best_epoch": int(best["epoch"]),
        "modes": int(best["modes_covered"]),
        "hq": float(best["hq_fraction"]),
        "seconds": seconds,
    }


def draw(panels: list[tuple[str, Path, Path]], path: Path) -> None:
    """Each variant's best generator (first seed) against the real samples."""
    import importlib.util

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 4.5), squeeze=False)
    for ax, (title, project, out_dir) in zip(axes[0], panels, strict=False):
        spec = importlib.util.spec_from_file_location(f"bench_{out_dir.name}", project / "train.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        args = module.parse_args([])
        generator, _ = module.build_models(args)
        generator.load_state_dict(torch.load(out_dir / "best.pt")["generator"])
        noise = torch.randn(2500, args.latent_dim, generator=torch.Generator().manual_seed(0))
        with torch.no_grad():
            fake = generator(noise)
        real = module.sample_real(2500, "cpu")
        ax.scatter(real[:, 0], real[:, 1], s=2, alpha=0.4, label="real")
        ax.scatter(fake[:, 0], fake[:, 1], s=2, alpha=0.4, label="generated")
        ax.set(xlim=(-3, 3), ylim=(-3, 3), aspect="equal", title=title)
    axes[0][0].legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    lines = [
        (
            f"Default runs on {platform.machine()} ({platform.processor() or 'cpu'}), "
            f"{len(args.seeds)} seed(s); each run's best epoch, which early stopping reloads."
        ),
        "",
        "| variant | seed | modes covered | high-quality share | epochs run | best epoch | time (s) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    summary = []
    panels = []
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.variants:
            title, options, extra = VARIANTS[key]
            project = render_project(options, key, Path(tmp))
            results = []
            for seed in args.seeds:
                result = run(project, seed, extra, Path(tmp) / f"{key}-{seed}")
                results.append(result)
                lines.append(
                    f"| {title} | {seed} | {result['modes']}/8 | {result['hq']:.1%} | {result['epochs']} "
                    f"| {result['best_epoch']} | {result['seconds']:.0f} |"
                )
                print(lines[-1], flush=True)
            summary.append(
                f"| {title} | {statistics.median(r['modes'] for r in results):g}/8 "
                f"| {statistics.median(r['hq'] for r in results):.1%} | {min(r['hq'] for r in results):.1%} "
                f"| {statistics.median(r['seconds'] for r in results):.0f} |"
            )
            panels.append((title, project, Path(tmp) / f"{key}-{args.seeds[0]}"))
        draw(panels, RESULTS / "gan_ring.png")
    lines += [
        "",
        "| variant | median modes | median high-quality share | lowest share | median time (s) |",
        "| --- | --- | --- | --- | --- |",
        *summary,
        "",
    ]
    (RESULTS / "gan_ring.md").write_text("\n".join(lines))
    print("\n".join(lines[-len(summary) - 3 :]))
    print(f"wrote {RESULTS / 'gan_ring.md'} and {RESULTS / 'gan_ring.png'}")


if __name__ == "__main__":
    main()
