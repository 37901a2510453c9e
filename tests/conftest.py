"""Fixtures the test modules share."""

import pytest

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
