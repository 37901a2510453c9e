"""Every pair of tricks runs together: for each task, a small set of renders (a covering array, built
here from the catalogue) in which every two tricks that apply to the task are seen in all four ways (both
on, either alone, neither), each render run for real (a short run in a process of its own, as users run
it; --ddp as a group of one). Every combination is rendered and checked statically by
test_combinations; this executes a few that between them meet every pair."""

import itertools
import math

import pytest

from generator.options import Task
from generator.tricks import TRICKS
from tests.goldens import TINY_LM
from tests.helpers import checkpoint, covering_array, metrics, render, run_script
from tests.images import TINY_IMAGES, make_images

SHORT = {
    Task.classify: ["--epochs", "2"],
    Task.gan: ["--epochs", "2", "--steps-per-epoch", "4", "--n-critic", "2"],
    Task.lm: [*TINY_LM, "--epochs", "2", "--steps-per-epoch", "4"],
    Task.image: [*TINY_IMAGES, "--epochs", "2"],  # and --data: the test's small folder
}


RUNS = [
    (task, row) for task in Task for row in covering_array(tuple(trick.name for trick in TRICKS if task in trick.tasks))
]


def test_the_covering_array_meets_every_pair_in_all_four_ways():
    for task in Task:
        names = [trick.name for trick in TRICKS if task in trick.tasks]
        rows = [row for t, row in RUNS if t is task]
        for a, b in itertools.combinations(names, 2):
            assert {(row[a], row[b]) for row in rows} == {(False, False), (False, True), (True, False), (True, True)}
        assert len(rows) < 2 ** len(names) / 10, "a few runs, not every combination"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("task", "row"), RUNS, ids=["-".join([t.value, *(n for n, on in r.items() if on)]) for t, r in RUNS]
)
def test_a_render_of_the_covering_array_runs(tmp_path, task, row):
    project = render(tmp_path / "p", task, **row)
    data = ["--data", make_images(tmp_path / "images", per_class=4, val=1)] if task is Task.image else []
    result = run_script(project, *SHORT[task], *data, "--out-dir", tmp_path / "run")
    assert result.returncode == 0, result.stderr[-3000:]
    rows = metrics(tmp_path / "run")
    assert [r["epoch"] for r in rows] == ["1", "2"]
    loss = "critic_loss" if task is Task.gan else "train_loss"
    assert all(math.isfinite(float(r[loss])) for r in rows)
    assert checkpoint(tmp_path / "run" / "last.pt")["epoch"] == 2
