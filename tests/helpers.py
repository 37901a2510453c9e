"""Helpers the tests share: render projects, load or run their train.py, read what a run wrote."""

from __future__ import annotations

import atexit
import csv
import functools
import hashlib
import importlib.util
import itertools
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from generator.options import Options, Task
from generator.render import generate

ROOT = Path(__file__).resolve().parent.parent
TIMING = {"epoch_time_s", "tokens_per_s", "images_per_s"}  # columns that differ between identical runs


@functools.cache
def covering_array(names: tuple[str, ...], strength: int = 2) -> list[dict[str, bool]]:
    """Rows of on/off for `names` in which every `strength` of the names take all their 2**strength values
    together. Greedy: each new row is the candidate that covers the most combinations still missing
    (deterministic: the first such candidate in itertools.product's order)."""
    groups = list(itertools.combinations(range(len(names)), strength))
    candidates = list(itertools.product((False, True), repeat=len(names)))

    def covers(values):  # each (group, its values) as one number: group index * 2**strength + the values' bits
        return [g << strength | sum(values[i] << k for k, i in enumerate(group)) for g, group in enumerate(groups)]

    covered = [covers(values) for values in candidates]
    missing, rows = set(range(len(groups) << strength)), []
    while missing:
        gains = [sum(c in missing for c in cover) for cover in covered]
        best = gains.index(max(gains))
        rows.append(dict(zip(names, candidates[best], strict=False)))
        missing -= set(covered[best])
    return rows


def no_pause(done, tally):
    """train_one_epoch's pause() when a test calls it by hand: it neither saves nor stops."""


def render(dest: Path, task: Task | str | None = None, **tricks: bool) -> Path:
    """A project rendered by the same path `tricks new` takes; returns its folder."""
    generate(Options.create(task, **tricks), dest)
    return dest


_loaded = itertools.count()


def load(script: Path):
    """Import a rendered train.py as a fresh module (importing it must have no side effects)."""
    spec = importlib.util.spec_from_file_location(f"rendered_train_{next(_loaded)}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_main(module, argv: list[str]):
    """module.main(argv) in this process; restores the signal handlers the script installs."""
    handlers = {signum: signal.getsignal(signum) for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGUSR1)}
    try:
        return module.main([str(arg) for arg in argv])
    finally:
        for signum, handler in handlers.items():
            signal.signal(signum, handler)


def scratch_env(beside: Path) -> dict[str, str]:
    """os.environ with TMPDIR in a folder beside `beside`: what a subprocess leaves in its temporary
    folder (torchrun's rendezvous folders, cookiecutter's hook scripts) stays in the test's folder.
    TMPDIR names it through a short link in the system's temporary folder: DataLoader workers pass tensors
    through Unix sockets made in TMPDIR, whose paths may not pass 107 characters, and a test's folder under
    pytest-xdist comes close (past it, a worker's socket fails unseen and the run waits forever)."""
    scratch = Path(beside).parent / "tmp"
    scratch.mkdir(exist_ok=True)
    link = Path(tempfile.gettempdir()) / f"tt-{hashlib.sha1(str(scratch).encode()).hexdigest()[:10]}"
    if not link.is_symlink():
        link.symlink_to(scratch)
        atexit.register(link.unlink, missing_ok=True)
    return {**os.environ, "TMPDIR": str(link)}


def run_script(project: Path, *args, timeout: float = 300, check: bool = False, **popen) -> subprocess.CompletedProcess:
    """`python train.py ARGS` in the project folder, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **popen.pop("env", {})}
    return subprocess.run(
        [sys.executable, "train.py", *map(str, args)],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=check,
        env=env,
        **popen,
    )


def metrics(out_dir: Path, drop: set[str] = TIMING) -> list[dict[str, str]]:
    """metrics.csv's rows, without the timing columns."""
    with open(Path(out_dir) / "metrics.csv", newline="") as f:
        return [{key: value for key, value in row.items() if key not in drop} for row in csv.DictReader(f)]


def checkpoint(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=False)


def same_tensors(a: dict, b: dict) -> bool:
    """Two state dicts with bit-identical tensors (compared on the CPU: one may be on a GPU)."""
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[key].cpu(), b[key].cpu()) for key in a)


def max_difference(a: dict, b: dict) -> float:
    return max((a[key].float().cpu() - b[key].float().cpu()).abs().max().item() for key in a)


def stop_after(module, monkeypatch, epoch):
    """Ctrl-C during `epoch`: the script finishes it, saves, and exits with 130."""
    train_one_epoch = module.train_one_epoch
    epochs = []

    def train_then_stop(*args):
        metrics = train_one_epoch(*args)
        epochs.append(1)
        if len(epochs) == epoch:
            signal.raise_signal(signal.SIGINT)  # the run's handler: stop after this step
        return metrics

    monkeypatch.setattr(module, "train_one_epoch", train_then_stop)


def assert_the_lr_plot_changes_nothing(plotted, plain, argv: list, tmp_path: Path) -> None:
    """The same run rendered with --lr-plot and without: bit-identical weights and rows, a PNG drawn, and no
    warning that a scheduler stepped before its optimizer (the plot steps a throwaway one)."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with_plot = run_main(plotted, [*argv, "--out-dir", tmp_path / "plot"])
    without = run_main(plain, [*argv, "--out-dir", tmp_path / "plain"])
    assert same_tensors(with_plot.state_dict(), without.state_dict())
    assert metrics(tmp_path / "plot") == metrics(tmp_path / "plain")
    assert (tmp_path / "plot" / "lr_schedule.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not [w for w in caught if "lr_scheduler.step()" in str(w.message)]
