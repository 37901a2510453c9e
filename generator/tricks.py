"""The trick catalogue: what each trick is for and which tasks it applies to. Its code lives in
one template partial, templates/train/templates/tricks/<name>.j2."""

from dataclasses import dataclass

from generator.options import TRICK_NAMES, Task


@dataclass(frozen=True)
class Trick:
    name: str  # the Options field and the partial's file name
    summary: str
    tasks: tuple[Task, ...] = (Task.classify, Task.gan)

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


TRICKS = (
    Trick("seed", "seed every random stream and pick deterministic kernels: same seed, same weights"),
    Trick("gp", "WGAN-GP: Wasserstein loss with gradient penalty (implies --task gan)", (Task.gan,)),
    Trick("accumulate", "gradient accumulation: K micro-batches make one optimizer step"),
    Trick("amp", "automatic mixed precision: bfloat16, or float16 with a GradScaler"),
    Trick("clip", "gradient clipping by norm or by value, after unscaling, once per step"),
    Trick("lr_plot", "draw the learning-rate schedule to lr_schedule.png without touching the run"),
    Trick("early_stop", "keep the best checkpoint; stop when the monitored metric stalls"),
    Trick("ddp", "DistributedDataParallel: the same script on many processes with torchrun"),
)
BY_NAME = {trick.name: trick for trick in TRICKS}
assert tuple(BY_NAME) == TRICK_NAMES, "the catalogue and Options list the same tricks in the same order"


def lookup(name: str) -> Trick:
    """A trick by its name or flag: `lr-plot`, `lr_plot` and `--lr-plot` all name the same one."""
    from generator.errors import UsageError

    key = name.removeprefix("--").replace("-", "_")
    if key not in BY_NAME:
        known = ", ".join(trick.flag.removeprefix("--") for trick in TRICKS)
        raise UsageError(f"no trick named {name!r}; the tricks are: {known}")
    return BY_NAME[key]
