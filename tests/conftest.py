"""Fixtures the test modules share, and one CPU thread for every script the suite runs: in this process
(torch.set_num_threads) and in the subprocesses it starts (OMP_NUM_THREADS, which torch reads at start).
The scripts' models are tiny, so one thread is the fastest; results then do not depend on the core count,
and tests that run side by side do not fight over cores."""

import os

import pytest
import torch

os.environ["OMP_NUM_THREADS"] = "1"
torch.set_num_threads(1)

pytest.register_assert_rewrite("tests.helpers")  # its assert_... helpers report like a test

from tests.helpers import load, render


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
