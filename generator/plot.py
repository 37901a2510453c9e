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
LEGEND_ROW_INCHES, LEGEND_CHAR_INCHES = 0.25, 0.07  # a legend entry's height, and a label character's width
SKIP = {"epoch", "epoch_time_s"}  # the x axis, and the wall time, which compares machines rather than runs


def read_run(folder: Path, notes: list[str] | None = None) -> tuple[str, dict, list[dict[str, float]]]:
    """A run's label (its folder and tricks), its options (from run.json; none for an older script's run)
    and its metrics.csv rows, as numbers. A file that cannot be read as the scripts write it is refused in one
    line naming it and the row; a last row cut short (a run still writing it, or killed) is skipped, noted."""
    metrics = folder / "metrics.csv"
    if not metrics.is_file():
        raise UsageError(f"{folder} holds no metrics.csv: not a run folder")
    rows = read_metrics(metrics, notes if notes is not None else [])
    label = folder.absolute().name
    try:
        info = json.loads((folder / "run.json").read_text())
        return f"{label} ({', '.join(info['tricks']) or 'no tricks'})", info["args"], rows
    except (OSError, ValueError, KeyError, TypeError):
        return label, {}, rows  # a run of an older script: its folder's name alone


def read_metrics(path: Path, notes: list[str]) -> list[dict[str, float]]:
    """metrics.csv's rows as numbers, checked: a header with epoch and at least one metric, every cell a number
    (or empty: a column a later epoch added), no row longer than the header."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise TricksError(f"cannot read {path}: {reason(err)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise UsageError(f"{path}: line {line} is not UTF-8 text: not a metrics.csv the scripts write") from None
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n") and len(lines) > 1:
        notes.append(f"{path}: skipped the last row, cut short (a run still writing it?)")
        lines = lines[:-1]
    table = list(csv.reader(lines))
    if not table or not any(table[0]):
        raise UsageError(f"{path} is empty: no header, no epoch yet")
    header = table[0]
    if "epoch" not in header:
        raise UsageError(f"{path} has no epoch column (its header: {','.join(header)[:80]})")
    if len([name for name in header if name not in SKIP]) == 0:
        raise UsageError(f"{path} has no metric besides {' and '.join(name for name in header if name in SKIP)}")
    rows = []
    for number, cells in enumerate(table[1:], 2):
        if len(cells) > len(header):
            raise UsageError(f"{path}: row {number} has {len(cells)} fields, the header {len(header)}")
        row = {}
        for name, cell in zip(header, cells, strict=False):
            if cell == "":
                continue
            try:
                row[name] = float(cell)
            except ValueError:
                raise UsageError(f"{path}: row {number}, column {name}: {cell[:20]!r} is not a number") from None
        if "epoch" not in row:
            raise UsageError(f"{path}: row {number} has no epoch")
        rows.append(row)
    if not rows:
        raise UsageError(f"{path} holds no epoch yet")
    return rows


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


def plot_runs(folders: list[Path], out: Path, notes: list[str] | None = None) -> list[str]:
    """Draw the runs in `folders` into `out` (a PNG); returns the metrics drawn, a panel each. Each run keeps
    one colour (and line style) in every panel; the legend is the figure's, below the panels."""
    if not out.name or out.name in (".", "..") or out.is_dir():
        raise UsageError(f"--out {out}: name a PNG file to write, not a folder")
    runs = [read_run(folder, notes) for folder in folders]
    names = panels_of(runs)
    try:
        import matplotlib
    except ImportError:
        raise TricksError("tricks plot needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    fig = figure_of(runs, names)
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


def figure_of(runs: list[tuple[str, dict, list[dict[str, float]]]], names: list[str]):
    """The figure: a panel per metric in `names`, a line per run, the legend below the panels."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    columns = min(COLUMNS, len(names))
    rows = math.ceil(len(names) / columns)
    labels = labels_of(runs)
    width = PANEL_INCHES[0] * columns
    per_row = max(1, min(len(labels), int(width / (1.0 + LEGEND_CHAR_INCHES * max(map(len, labels))))))  # handle: 1 in
    legend_rows = math.ceil(len(labels) / per_row)
    legend_inches = LEGEND_ROW_INCHES * legend_rows + 0.3
    fig, axes = plt.subplots(rows, columns, figsize=(width, PANEL_INCHES[1] * rows + legend_inches), squeeze=False)
    styles = run_styles(len(runs))
    for ax, name in zip(axes.flat, names, strict=False):
        for (_, _, metrics), label, style in zip(runs, labels, styles, strict=True):
            points = [(row["epoch"], row[name]) for row in metrics if name in row]
            if points:
                ax.plot(*zip(*points, strict=True), marker="." if len(points) < 30 else None, label=label, **style)
        ax.set(title=name, xlabel="epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(names) :]:
        ax.remove()
    handles = [plt.Line2D([], [], marker=".", **style) for style in styles]
    fig.legend(handles, labels, loc="lower center", ncol=per_row, fontsize="small", frameon=False)
    fig.tight_layout(rect=(0, legend_inches / fig.get_figheight(), 1, 1))
    return fig


def run_styles(count: int) -> list[dict]:
    """A colour and line style per run: tab10's colours for up to 10 runs, tab20's for up to 20, then colours
    spread along a perceptual map, the line style cycling too, so that neighbours in a long legend differ."""
    import matplotlib

    if count <= 10:
        colours = matplotlib.colormaps["tab10"].colors[:count]
    elif count <= 20:
        colours = matplotlib.colormaps["tab20"].colors[:count]
    else:
        spread = matplotlib.colormaps["turbo"]
        colours = [spread(0.05 + 0.9 * (i * 0.6180339887 % 1)) for i in range(count)]  # neighbours far apart
    dashes = ["-", "--", "-.", ":"]
    return [
        {"color": colour, "linestyle": dashes[i // 10 % 4] if count > 10 else "-"} for i, colour in enumerate(colours)
    ]
