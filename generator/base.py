"""The merge base a project keeps: the files `tricks new` rendered, untouched, in .tricks/base. render.py
writes it with every new project and change.py merges against it; both import it from here, so neither
imports the other's module for it."""

from __future__ import annotations

import shutil
from pathlib import Path

ANSWERS = ".tricks-answers.yml"
GENERATED = ("train.py", "README.md", "requirements.txt", "test_train.py", "ruff.toml", "slurm.sbatch")
BASE = Path(".tricks") / "base"  # what tricks new or the last change rendered, untouched: the merge base


def keep_base(project: Path) -> None:
    """Copy the freshly rendered files into project/.tricks/base: the merge base of later changes."""
    base = project / BASE
    base.mkdir(parents=True, exist_ok=True)
    for name in (*GENERATED, ANSWERS):
        if (project / name).exists():
            shutil.copy2(project / name, base / name)
