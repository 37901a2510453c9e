"""`tricks plot`: the metrics of one or more runs in one PNG, a panel per metric, the runs overlaid. It
reads what the scripts write (metrics.csv, and run.json for the labels): no torch here, and matplotlib
only once a plot is drawn."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path

from generator.errors import TricksError, UsageError
from generator.render import reason

PANEL_INCHES, DPI, COLUMNS = (4.0, 3.0), 100, 3
SKIP = {"epoch", "epoch_time_s"}  # the x axis, and the wall time, which compares machines rather than runs


def read_run(folder: Path) -> tuple[str, dict, list[dict[str, float]]]:
    """A run's label (its folder and tricks), its options (from run.json; none for an older script's run)
    and its metrics.csv rows, as numbers."""
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        raise UsageError(f"{folder} holds no metrics.csv: not a run folder")
    with open(metrics, newline="") as f:
        rows = [
            {key: float(value) for key, value in row.items() if value not in ("", None)} for row in csv.DictReader(f)
        ]
    if not rows:
        raise UsageError(f"{metrics} holds no epoch yet")
    label = folder.absolute().name
    try:
        info = json.loads((folder / "run.json").read_text())
        return f"{label} ({', '.join(info['tricks']) or 'no tricks'})", info["args"], rows
    except (OSError, ValueError, KeyError, TypeError):
        return label, {}, rows  # a run of an older script: its folder's name alone


def labels_of(runs: list[tuple[str, dict, list]]) -> list[str]:
    """Each run's label, with the options in which the runs differ (--optimizer sgd against adamw, say)."""
    where = {"out_dir", "resume", "overwrite", "device", "threads", "num_workers"}  # where a run ran, not what
    # the options every run has: one that only some have belongs to their tricks, which the label names
    shared = set.intersection(*(set(args) for _, args, _ in runs)) - where
    differing = [key for key in sorted(shared) if len({json.dumps(args[key]) for _, args, _ in runs}) > 1]
    labels = []
    for label, args, _ in runs:
        options = ", ".join(f"{key.replace('_', '-')} {args[key]}" for key in differing if key in args)
        labels.append(f"{label}: {options}" if options else label)
    return labels


def panels_of(runs: list[tuple[str, dict, list[dict[str, float]]]]) -> list[str]:
    """One panel per metric any run logged, in the order of the first run that has it."""
    names: list[str] = []
    for _, _, rows in runs:
        names += [name for name in rows[0] if name not in SKIP and name not in names]
    return names


def plot_runs(folders: list[Path], out: Path) -> list[str]:
    """Draw the runs in `folders` into `out` (a PNG); returns the metrics drawn, a panel each."""
    runs = [read_run(folder) for folder in folders]
    names = panels_of(runs)
    try:
        import matplotlib
    except ImportError:
        raise TricksError("tricks plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    columns = min(COLUMNS, len(names))
    rows = math.ceil(len(names) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(PANEL_INCHES[0] * columns, PANEL_INCHES[1] * rows), squeeze=False)
    labels = labels_of(runs)
    for ax, name in zip(axes.flat, names, strict=False):
        for label, (_, _, metrics) in zip(labels, runs, strict=False):
            points = [(row["epoch"], row[name]) for row in metrics if name in row]
            if points:
                ax.plot(*zip(*points, strict=False), marker="." if len(points) < 30 else None, label=label)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(names) :]:
        ax.remove()
    axes.flat[0].legend(fontsize="small")
    fig.tight_layout()
    tmp = out.with_name(out.name + ".tmp")
    try:
        fig.savefig(tmp, dpi=DPI, format="png")
        os.replace(tmp, out)  # the whole PNG or none: a failed plot leaves no half file
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise TricksError(f"cannot write {out}: {reason(err)}") from None
    finally:
        plt.close(fig)
    return names
