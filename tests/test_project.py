"""The project around train.py: its own smoke test passes, and its README lists every option."""

import re
import subprocess
import sys

import pytest

from tests.helpers import render

CASES = {
    "classify-six": ("classify", {"seed": True, "amp": True, "clip": True, "accumulate": True, "lr_plot": True,
                                 "early_stop": True}),
    "gan-gp-ddp": ("gan", {"gp": True, "ddp": True, "early_stop": True}),
    "lm-ema-early-stop": ("lm", {"ema": True, "early_stop": True, "accumulate": True}),
    "image-ema-amp": ("image", {"ema": True, "amp": True}),  # its smoke test draws the default data set
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_the_projects_own_smoke_test_passes(tmp_path, case):
    task, tricks = CASES[case]
    project = render(tmp_path / case, task, **tricks)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_train.py"],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "1 passed" in result.stdout


@pytest.mark.parametrize("case", CASES)
def test_the_project_readme_lists_every_option(tmp_path, case):
    task, tricks = CASES[case]
    project = render(tmp_path / case, task, **tricks)
    options = re.findall(r'add_argument\(\s*"(--[\w-]+)"', (project / "train.py").read_text())
    readme = (project / "README.md").read_text()
    assert options and all(f"| `{option}` |" in readme for option in options)
    assert "--help" in readme and "python train.py" in readme
