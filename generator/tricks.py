"""The trick catalogue, the one place that lists the tricks: what each is for and which tasks it applies
to. Options (its fields), the `tricks new` flags, the answers file, the README's table and the tests'
combination counts all come from it. A trick's code lives in one template partial,
templates/train/templates/tricks/<name>.j2 (docs/adding-a-trick.md says how to add one)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Task(str, Enum):
    """What the generated script trains."""

    classify = "classify"
    gan = "gan"
    lm = "lm"
    image = "image"


@dataclass(frozen=True)
class Trick:
    name: str  # the Options field, the cookiecutter variable and the partial's file name
    summary: str
    tasks: tuple[Task, ...] = (Task.classify, Task.gan, Task.lm, Task.image)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


TRICKS = (
    Trick("seed", "seed every random stream and pick deterministic kernels: same seed, same weights"),
    Trick("gp", "WGAN-GP: Wasserstein loss with gradient penalty (implies --task gan)", (Task.gan,)),
    Trick("accumulate", "gradient accumulation: K micro-batches make one optimizer step"),
    Trick("amp", "automatic mixed precision: bfloat16, or float16 with a GradScaler"),
    Trick("clip", "gradient clipping by norm or by value, after unscaling, once per step"),
    Trick("ema", "exponential moving average of the weights: validated, kept as best.pt, and the final weights"),
    Trick("compile", "torch.compile the models' forward passes; checkpoints stay plain, resumable either way"),
    Trick("lr_plot", "draw the learning-rate schedule to lr_schedule.png without touching the run"),
    Trick("early_stop", "keep the best checkpoint; stop when the monitored metric stalls"),
    Trick("tensorboard", "log every metric to TensorBoard from rank 0; a resumed run repeats no step"),
    Trick("ddp", "DistributedDataParallel: the same script on many processes with torchrun"),
)
BY_NAME = {trick.name: trick for trick in TRICKS}


def lookup(name: str) -> Trick:
    """A trick by its name or flag: `lr-plot`, `lr_plot` and `--lr-plot` all name the same one."""
    from generator.errors import UsageError

    key = name.removeprefix("--").replace("-", "_")
    if key not in BY_NAME:
        known = ", ".join(trick.flag.removeprefix("--") for trick in TRICKS)
        raise UsageError(f"no trick named {name!r}; the tricks are: {known}")
    return BY_NAME[key]
