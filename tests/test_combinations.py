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
from generator.render import render_project
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


def test_the_default_render_stays_short(renders):
    """The house style asks for a few hundred lines: no creep (the limits leave a few lines of room). Since
    issue 13 about 140 of them keep the fault promises (checked resume, lock, last.pt.prev, write errors);
    since issue 15 about 60 give the optimizer and schedule choices, the progress bar and run.json. The language
    model's 200 more are its GPT (nanoGPT's model.py is 330 lines), its text, batches, samples and --sample.
    Issue 18 added about 100: the stop at an optimizer step with a save there that resumes exactly (pause,
    checkpoint_at, the epoch's tally and, for the classifier, its order of batches), --save-every-steps,
    --resume auto, SIGUSR1 and a signal delivered twice counting once. Issue 24 added the classifier's reading
    of real data (about 130: an order and per-sample random streams of the run's own, workers that ignore the
    stop signals, a resume that skips by indices) and a loss function per task; the language model's default
    prompt and a sampling safe at any temperature took 4."""
    assert len((renders / "classify" / "train.py").read_text().splitlines()) <= 824
    assert len((renders / "gan" / "train.py").read_text().splitlines()) <= 750
    assert len((renders / "lm" / "train.py").read_text().splitlines()) <= 890


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
