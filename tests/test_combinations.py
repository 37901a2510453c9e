"""Combinations of tricks render, compile and pass ruff (with the rules E, F, W, B and I) and ruff format,
for every task. `make test` checks a covering array of every three tricks that apply to a task (each three
seen in all eight ways), plus each trick alone and none (TRIPLES counts them); `make test-all` checks every
subset of the catalogue's tricks (COMBINATIONS: their number doubles with each trick). Rendering is
in-process."""

import itertools
import re
import subprocess
import sys
from pathlib import Path

import pytest

from generator.options import Options, Task
from generator.render import render_project, render_script
from generator.tricks import TRICKS
from tests.helpers import ROOT, covering_array

APPLY = {task: [trick.name for trick in TRICKS if task in trick.tasks] for task in Task}
COMBINATIONS = sum(2 ** len(names) for names in APPLY.values())


def all_options():
    for task, names in APPLY.items():
        for values in itertools.product((False, True), repeat=len(names)):
            yield Options(task=task, **dict(zip(names, values, strict=False)))


def triple_options():
    """Per task: a covering array of strength 3, then none and each trick alone (the traces' references)."""
    seen = set()
    for task, names in APPLY.items():
        singles = [dict.fromkeys(names, False)] + [{n: n == name for n in names} for name in names]
        for row in covering_array(tuple(names), 3) + singles:
            key = (task, tuple(row.values()))
            if key not in seen:
                seen.add(key)
                yield Options(task=task, **row)


TRIPLES = sum(1 for _ in triple_options())


def case_name(options: Options) -> str:
    return "-".join([options.task.value, *options.tricks]).replace("_", "")


SETS = {
    "triples": (triple_options, TRIPLES, f"{TRIPLES} renders"),
    "every": (all_options, COMBINATIONS, f"all {COMBINATIONS} combinations"),
}


def kind(renders: Path) -> str:
    """Which set a renders folder holds: its name less the number tmp_path_factory appends."""
    return renders.name.rstrip("0123456789")


@pytest.fixture(scope="module", params=["triples", pytest.param("every", marks=pytest.mark.exhaustive)])
def renders(request, tmp_path_factory) -> Path:
    """The set's combinations rendered once, each in its own project folder."""
    out = tmp_path_factory.mktemp(request.param)
    for options in SETS[request.param][0]():
        render_project(options, case_name(options), out)
    return out


def test_the_combinations_are_rendered_and_the_readme_counts_them(renders):
    _, count, words = SETS[kind(renders)]
    assert len(list(renders.iterdir())) == count
    assert words in (ROOT / "README.md").read_text()
    print(f"{count} renders checked")


def test_the_triples_cover_every_three_tricks_in_all_eight_ways():
    for task, names in APPLY.items():
        rows = [options for options in triple_options() if options.task is task]
        for group in itertools.combinations(names, 3):
            seen = {tuple(getattr(options, name) for name in group) for options in rows}
            assert len(seen) == 8, (task, group)
        assert len(rows) < 2 ** len(names) / 20, "a few dozen renders, not every combination"


def test_every_combination_compiles(renders):
    failures = []
    for script in sorted(renders.glob("*/train.py")) + sorted(renders.glob("*/test_train.py")):
        try:
            compile(script.read_text(), str(script), "exec")
        except SyntaxError as err:
            failures.append(f"{script.parent.name}/{script.name}:{err.lineno}: {err.msg}")
    assert not failures, "\n".join(failures)


def ruff(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ruff", *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_every_combination_passes_ruff_check(renders):
    # each project's own ruff.toml applies (ruff finds it beside the files)
    result = ruff("check", "--no-cache", "--output-format", "concise", "--select", "E,F,W,B,I", ".", cwd=renders)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr


def test_every_combination_is_ruff_formatted(renders):
    result = ruff("format", "--no-cache", "--check", "--diff", ".", cwd=renders)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr


def plumbing(script: str) -> str:
    """The script's run plumbing section: from its header to `if __name__ == "__main__":`."""
    return script[script.index("\n# run plumbing") : script.index('\nif __name__ == "__main__":')]


def test_the_run_plumbing_is_the_same_in_every_render_of_a_task(renders):
    """Byte for byte, whatever the tricks: tricks add, remove and update never conflict in code no user edits."""
    versions = {}
    for script in sorted(renders.glob("*/train.py")):
        task = script.parent.name.split("-")[0]
        versions.setdefault(task, {}).setdefault(plumbing(script.read_text()), []).append(script.parent.name)
    assert sorted(versions) == sorted(task.value for task in Task)
    for task, texts in versions.items():
        assert len(texts) == 1, f"{task}: {len(texts)} versions, first in " + ", ".join(n[0] for n in texts.values())


def marks(text: str) -> set[str]:
    """What identifies a script's parts: the options it parses and the functions it defines."""
    return set(re.findall(r'"(--[a-z][a-z0-9-]*)"', text)) | set(re.findall(r"^def (\w+)\(", text, flags=re.MULTILINE))


def test_no_trick_leaves_a_trace_when_not_chosen(renders):
    """Each trick's trace (the options and functions that its render alone adds to the task's plain script)
    appears in a script exactly when the trick is chosen; every trick leaves one."""
    traces = {}
    for task, names in APPLY.items():
        plain = marks((renders / task.value / "train.py").read_text())
        for name in names:
            alone = case_name(Options(task=task, **{name: True}))
            traces[task, name] = marks((renders / alone / "train.py").read_text()) - plain
            assert traces[task, name], f"{alone} adds no option or function of its own"
    for options in SETS[kind(renders)][0]():
        found = marks((renders / case_name(options) / "train.py").read_text())
        for name in APPLY[options.task]:
            trace = traces[options.task, name]
            if getattr(options, name):
                assert trace <= found, f"{case_name(options)}: {sorted(trace - found)}"
            else:
                assert not trace & found, f"{case_name(options)}: {sorted(trace & found)}"


# The default render's lines, by section: the budget each may not outgrow, and why it is that size. A change that
# needs more raises one budget here, with its reason, so that growth shows where it happens. The model is nanoGPT's
# train.py (336 lines): data, model, loop and a checkpoint; the sections beyond those are the fault promises.
SECTIONS = {
    "header": ("the docstring with its usage lines, and the imports",
               {"classify": 47, "gan": 52, "lm": 50, "image": 50}),
    "options": ("parse_args: every option with its help and checks; lm adds the GPT's size and sampling, image the "
                "ResNet's size and --predict", {"classify": 80, "gan": 80, "lm": 115, "image": 100}),
    "data": ("the seams a user replaces (data, model, loss); the GAN's scoring and plot, lm's text and GPT, image's "
             "folder layout, decoding, augmentation, default data set drawn as files, and ResNet",
             {"classify": 50, "gan": 85, "lm": 120, "image": 250}),
    "training": ("optimizer, schedule, progress bar, the Run dataclass (a field per object train_one_epoch "
                 "reads), the epoch's loop and tally, validation; the GAN's draw_inputs (a step's inputs drawn at "
                 "once); lm's batches and sampling; image's accuracy and images/s",
                 {"classify": 145, "gan": 140, "lm": 215, "image": 155}),
    "prediction": ("the image task's --predict: a folder labelled into predictions.csv", {"image": 40}),
    "reading": ("the classifiers' data order: EpochOrder, PerSample, loaders rebuilt, workers that ignore stops",
                {"classify": 140, "image": 140}),
    "the run": ("train(): seeding, folder, resume, the epoch loop, saves at steps and epochs, stops; exit_stopped "
                "and main()", {"classify": 145, "gan": 160, "lm": 160, "image": 150}),
    "run plumbing": ("the same in every render: folder and lock, the writer thread, atomic files, metrics.csv, "
                     "checked resume, random states, signals", {"classify": 290, "gan": 290, "lm": 290, "image": 290}),
}  # fmt: skip


def sections(script: str) -> dict[str, int]:
    """Lines per section: the header, then each `# ---` section by the words its title starts with."""
    lines = script.splitlines()
    starts = [i for i, line in enumerate(lines) if line.startswith("# ---")] + [len(lines)]
    sizes = {"header": starts[0]}
    for start, end in zip(starts, starts[1:], strict=False):
        title = lines[start + 1].removeprefix("# ")
        sizes[next(name for name in SECTIONS if title.startswith(name))] = end - start
    return sizes


@pytest.mark.parametrize("task", [task.value for task in Task])
def test_the_default_render_keeps_its_line_budget(task):
    sizes = sections(render_script(Options(task=Task(task))))
    budget = {name: limits[task] for name, (_, limits) in SECTIONS.items() if task in limits}
    assert sizes.keys() == budget.keys()
    over = {name: f"{sizes[name]} > {budget[name]}" for name in sizes if sizes[name] > budget[name]}
    assert not over, f"{task}: {over}; raise the budget in SECTIONS with its reason, or cut"


def test_ruff_is_the_pinned_version():
    assert ruff("--version", cwd=ROOT).stdout.split()[-1] == "0.17.6"


def test_matplotlib_is_imported_only_to_plot(renders):
    """Importing a rendered script loads torch, not matplotlib; plotting loads it."""
    script = renders / "classify-lrplot" / "train.py"
    code = (
        "import importlib.util, sys, torch\n"
        f"spec = importlib.util.spec_from_file_location('train', {str(script)!r})\n"
        "module = importlib.util.module_from_spec(spec); spec.loader.exec_module(module)\n"
        "print('matplotlib' in sys.modules)\n"
        "module.plot_lr_schedule(module.parse_args([]), 10, __import__('pathlib').Path('/dev/null'))\n"
        "print('matplotlib' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split() == ["False", "True"]
