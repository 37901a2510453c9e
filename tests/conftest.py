"""Fixtures the test modules share (the fault tests' projects and runs; a module may define its own
`projects`), and one CPU thread for every script the suite runs: in this process
(torch.set_num_threads) and in the subprocesses it starts (OMP_NUM_THREADS, which torch reads at start).
The scripts' models are tiny, so one thread is the fastest; results then do not depend on the core count,
and tests that run side by side do not fight over cores."""

import os

import pytest
import torch

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

pytest.register_assert_rewrite("tests.helpers")  # its assert_... helpers report like a test

from tests.faults import ARGS, SIX
from tests.helpers import load, render, run_main, run_script


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """rendered(task, **tricks): that task's train.py with these tricks, rendered once per test
    module and imported."""
    cache = {}

    def get(task, **tricks):
        key = (task, tuple(sorted(tricks.items())))
        if key not in cache:
            project = render(tmp_path_factory.mktemp(task) / "p", task, **tricks)
            cache[key] = load(project / "train.py")
        return cache[key]

    return get


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    """projects[name]: rendered project folders."""
    root = tmp_path_factory.mktemp("faults")
    return {
        "classify": render(root / "classify", "classify", **SIX),
        "gan": render(root / "gan", "gan", gp=True, seed=True, amp=True, early_stop=True),
        "plain": render(root / "plain", "classify"),
        "no-amp": render(root / "no-amp", "classify", **{**SIX, "amp": False}),
        "no-plot": render(root / "no-plot", "classify", **{**SIX, "lr_plot": False}),
        "ddp": render(root / "ddp", "classify", ddp=True, seed=True),
    }


@pytest.fixture(scope="module")
def modules(projects):
    return {name: load(project / "train.py") for name, project in projects.items()}


@pytest.fixture(scope="module")
def uninterrupted(projects, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    run_script(projects["classify"], *ARGS, "--out-dir", out, check=True)
    return out


@pytest.fixture(scope="module")
def saved_run(modules, tmp_path_factory):
    """A stopped two-epoch run of the six-trick classify script: (its folder, its arguments)."""
    out = tmp_path_factory.mktemp("saved") / "run"
    args = ["--epochs", 4, "--seed", 8, "--patience", 100]
    run_main(modules["classify"], [*args, "--out-dir", out])
    return out, args
