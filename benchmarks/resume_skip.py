"""What a resume mid-epoch costs on image files: the generated classifier's reading of the data (EpochOrder,
PerSample) against iterating the loader up to the saved batch, as the scripts did before. Writes N PNG images
(64x64, RGB, noise and a shape), reads them through a Dataset that decodes with Pillow and draws a random crop
and flip from torch's generator in __getitem__, with 2 DataLoader workers, as a user's image data is read.

For a save at 90% of an epoch, it times the wait for the first batch after the save: resumed by the script
(the sampler skips the indices) and by iterating past the trained batches (the old way), less the wait for
the first batch of a fresh epoch (starting the workers, which any start pays). The overhead is given as a share
of an epoch's reading time, the lower bound of a training epoch's time (so the share is an upper bound).

    python benchmarks/resume_skip.py                 # 4,000 images, 3 repeats
    python benchmarks/resume_skip.py --images 1000 --repeats 1
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from generator.options import Options
from generator.render import render_project
from tests.helpers import load

BATCH, WORKERS, AT = 64, 2, 0.9


class ImageFiles(torch.utils.data.Dataset):
    """PNG files decoded with Pillow, a random 56x56 crop and a random flip drawn from torch's generator."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        with Image.open(self.paths[index]) as image:
            pixels = torch.frombuffer(bytearray(image.convert("RGB").tobytes()), dtype=torch.uint8)
        x = pixels.view(64, 64, 3).permute(2, 0, 1).float() / 255
        top, left = torch.randint(0, 9, (2,)).tolist()
        x = x[:, top : top + 56, left : left + 56]
        if torch.rand(()) < 0.5:
            x = x.flip(2)
        return x, index % 10


def write_images(folder: Path, count: int) -> list[Path]:
    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        noise = (torch.rand(64, 64, 3, generator=generator) * 255).to(torch.uint8).numpy()
        image = Image.fromarray(noise)
        ImageDraw.Draw(image).ellipse((8 + i % 20, 8, 40 + i % 20, 40), fill=(255, 40 * (i % 6), 0))
        paths.append(folder / f"{i:05d}.png")
        image.save(paths[-1])
    return paths


def first_batch_wait(batches) -> float:
    started = time.perf_counter()
    next(batches)
    return time.perf_counter() - started


def measure(module, paths: list[Path]) -> dict[str, float]:
    loader = torch.utils.data.DataLoader(
        ImageFiles(paths), batch_size=BATCH, shuffle=True, num_workers=WORKERS, persistent_workers=False
    )
    train_loader, _ = module.replayable(loader, loader, seed=0)
    done = int(AT * len(train_loader))
    train_loader.sampler.set_epoch(1)
    started = time.perf_counter()
    for _ in module.start_reading(train_loader):
        pass
    epoch = time.perf_counter() - started
    train_loader.sampler.set_epoch(2)
    fresh = first_batch_wait(iter(module.start_reading(train_loader)))
    train_loader.sampler.set_epoch(2)
    position = {"done": done, "tally": module.new_tally()}
    _, batches = module.epoch_batches(train_loader, position)
    skipped = first_batch_wait(batches)
    train_loader.sampler.set_epoch(2)

    def past_the_trained_batches():
        batches = iter(module.start_reading(train_loader))
        for _ in range(done):
            next(batches)
        yield next(batches)

    iterated = first_batch_wait(past_the_trained_batches())
    return {"epoch": epoch, "skip": (skipped - fresh) / epoch, "iterate": (iterated - fresh) / epoch}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        project = render_project(Options.create("classify", seed=True), "bench", Path(tmp))
        module = load(project / "train.py")
        (Path(tmp) / "images").mkdir()
        paths = write_images(Path(tmp) / "images", args.images)
        runs = [measure(module, paths) for _ in range(args.repeats)]
    epoch = statistics.median(run["epoch"] for run in runs)
    skip = statistics.median(run["skip"] for run in runs)
    iterate = statistics.median(run["iterate"] for run in runs)
    print(f"{args.images} PNG images (64x64, decoded with Pillow, random crop and flip), batches of {BATCH}, "
          f"{WORKERS} workers, {args.repeats} repeats (medians); an epoch's reading: {epoch:.2f} s")  # fmt: skip
    print(f"resume at {AT:.0%} of the epoch, its overhead as a share of an epoch (target < 5%):")
    print(f"    the script (the sampler skips the trained indices): {skip:.1%}")
    print(f"    iterating the loader past the trained batches (before): {iterate:.1%}")


if __name__ == "__main__":
    main()
