"""`tricks add / remove / update / diff`: change the tricks of a project the user has edited, keeping the
edits. A three-way merge per generated file, line by line as git merges: the base is the pristine render
that `tricks new` kept in .tricks/base (so no old version of the generator is ever needed), ours is the
user's file, theirs the new render. `git merge-file` does the merging: git's own merge, well kept and on
every machine that has git.

Nothing is half done: every file of one command is staged in .tricks/staging, which is marked complete
only once it is whole; the files are then moved into place. A kill before the mark leaves the project as
it was (the next command discards the staging); a kill after it leaves a complete staging, which the next
command moves into place first."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator.errors import TricksError, UsageError
from generator.options import Options
from generator.render import reason, render_project
from generator.tricks import lookup

ANSWERS = ".tricks-answers.yml"
GENERATED = ("train.py", "README.md", "requirements.txt", "test_train.py", "ruff.toml", "slurm.sbatch")
OPTIONAL = ("slurm.sbatch",)  # generated with some tricks only (--ddp): added and removed with them
BASE = Path(".tricks") / "base"  # what tricks new or the last change rendered, untouched: the merge base
STAGING = Path(".tricks") / "staging"
COMPLETE = "COMPLETE"  # in the staging folder: every staged file is whole, so moving them in may begin
REMOVED = "REMOVED"  # in the staging folder: the generated files to delete, one per line


@dataclass
class Merged:
    name: str
    text: str  # the merged file (with conflict markers where the two sides met)
    status: str  # updated, unchanged, conflict; added or removed (an OPTIONAL file)
    conflicts: list[str]  # per conflict: where it is and its two sides, in a line


def keep_base(project: Path) -> None:
    """Copy the freshly rendered files into project/.tricks/base: the merge base of later changes."""
    base = project / BASE
    base.mkdir(parents=True, exist_ok=True)
    for name in (*GENERATED, ANSWERS):
        if (project / name).exists():
            shutil.copy2(project / name, base / name)


def open_project(project: Path) -> tuple[Path, Options, str]:
    """The project's folder, its recorded options and name; refused when it is not a tricks project."""
    project = Path(project).absolute()
    if not (project / ANSWERS).is_file():
        raise UsageError(f"{project} is not a tricks project: it has no {ANSWERS}")
    finish_interrupted(project)
    options, name = Options.from_answers(project / ANSWERS)
    if not (project / BASE).is_dir():
        raise TricksError(
            f"{project} has no {BASE}, the render its edits are measured against (made by plain cookiecutter, "
            "or by torch-tricks before 0.2); render it again with tricks new --force --answers to start one"
        )
    return project, options, name


def finish_interrupted(project: Path) -> None:
    """An earlier command that was killed: a complete staging is moved into place, an incomplete one dropped."""
    staging = project / STAGING
    if (staging / COMPLETE).exists():
        move_in(project, staging)
    elif staging.exists():
        shutil.rmtree(staging)


def markers_in(project: Path) -> list[str]:
    """The generated files that hold conflict markers left by `--conflicts markers`."""
    found = []
    for name in GENERATED:
        path = project / name
        if path.is_file() and any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in read(path).splitlines()):
            found.append(name)
    return found


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def chosen_options(options: Options, add: list[str], remove: list[str]) -> Options:
    """The options after adding and removing tricks; each refusal in one line."""
    tricks = set(options.tricks)
    for name in add:
        trick = lookup(name)
        if trick.name in tricks:
            raise UsageError(f"{trick.flag.removeprefix('--')} is already on")
        if options.task not in trick.tasks:
            tasks = ", ".join(task.value for task in trick.tasks)
            raise UsageError(
                f"{trick.flag.removeprefix('--')} does not apply to a {options.task.value} project (only: {tasks})"
            )
        tricks.add(trick.name)
    for name in remove:
        trick = lookup(name)
        if trick.name not in tricks:
            raise UsageError(f"{trick.flag.removeprefix('--')} is not on")
        tricks.discard(trick.name)
    return Options.create(options.task, **dict.fromkeys(tricks, True))


def merge_file(name: str, ours: Path, base: Path, theirs: Path) -> Merged:
    """git merge-file of one file: the user's (ours), the old render (base), the new render (theirs)."""
    command = ["git", "merge-file", "-p", "-L", f"{name} (yours)", "-L", f"{name} (before)", "-L", f"{name} (new)"]
    try:
        result = subprocess.run([*command, ours, base, theirs], capture_output=True, check=False)
    except FileNotFoundError:
        raise TricksError("tricks add, remove and update need git (git merge-file) on the PATH") from None
    if result.returncode < 0 or result.returncode > 127:
        raise TricksError(f"git merge-file failed on {name}: {result.stderr.decode(errors='replace').strip()}")
    text = result.stdout.decode("utf-8")
    conflicts = describe_conflicts(name, text)
    status = "conflict" if conflicts else ("unchanged" if text == read(ours) else "updated")
    return Merged(name, text, status, conflicts)


def describe_conflicts(name: str, text: str) -> list[str]:
    """Each conflict of a merged text in a line: the file, the lines, and the two sides."""
    conflicts, side, start, yours, new = [], None, 0, [], []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("<<<<<<< "):
            side, start, yours, new = "yours", number, [], []
        elif line.startswith("=======") and side == "yours":
            side = "new"
        elif line.startswith(">>>>>>> ") and side == "new":
            conflicts.append(f"{name}:{start}-{number}: yours {shorten(yours)}; the new render's {shorten(new)}")
            side = None
        elif side == "yours":
            yours.append(line.strip())
        elif side == "new":
            new.append(line.strip())
    return conflicts


def shorten(lines: list[str]) -> str:
    text = " | ".join(line for line in lines if line) or "(nothing)"
    return repr(text if len(text) <= 100 else text[:97] + "...")


def change(project: Path, add=(), remove=(), *, update: bool = False, markers: bool = False) -> list[Merged]:
    """Merge the new render of the project's options (with `add`, without `remove`) into its files. With
    conflicts, nothing is written unless `markers`; then the files get git's markers, and the answers file
    and the merge base stay as they were until the markers are gone."""
    if not update and not add and not remove:
        raise UsageError("name the tricks to add or remove")
    project, options, name = open_project(project)
    if found := markers_in(project):
        raise UsageError(f"{', '.join(found)} hold conflict markers from an earlier merge: resolve them first")
    new_options = chosen_options(options, list(add), list(remove))
    with tempfile.TemporaryDirectory(prefix="tricks-") as tmp:
        theirs = render_project(new_options, name, Path(tmp))
        merged = []
        for file in GENERATED:
            ours, base, new = project / file, project / BASE / file, theirs / file
            if file in OPTIONAL and not base.exists() and new.exists() and not ours.exists():
                merged.append(Merged(file, read(new), "added", []))  # the trick that writes it came in
            elif file in OPTIONAL and base.exists() and not new.exists() and ours.exists():
                merged.append(unrendered(file, ours, base))  # the trick that wrote it went
            elif ours.exists() and new.exists():  # a generated file the user deleted stays deleted
                merged.append(merge_file(file, ours, base if base.exists() else os.devnull, new))
        clean = not any(m.conflicts for m in merged)
        if clean or markers:
            stage(project, merged, theirs if clean else None)
    return merged


def unrendered(name: str, ours: Path, base: Path) -> Merged:
    """An optional file that the new render no longer writes: removed if the user left it as generated, else a
    conflict (their edits would be lost)."""
    if read(ours) == read(base):
        return Merged(name, "", "removed", [])
    return Merged(
        name, read(ours), "conflict", [f"{name}: yours is edited; the new render has no {name} (move it away)"]
    )


def stage(project: Path, merged: list[Merged], theirs: Path | None) -> None:
    """Write every changed file into the staging folder, mark it complete, then move the files in. With
    `theirs` (a clean merge), the answers file and the merge base move to the new render too."""
    staging = project / STAGING
    shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / BASE.name).mkdir(parents=True)
        for m in merged:
            if m.status not in ("unchanged", "removed"):
                write_synced(staging / m.name, m.text.encode("utf-8"))
        write_synced(staging / REMOVED, "".join(f"{m.name}\n" for m in merged if m.status == "removed").encode())
        if theirs is not None:
            write_synced(staging / ANSWERS, (theirs / ANSWERS).read_bytes())
            for file in (*GENERATED, ANSWERS):
                if (theirs / file).exists():
                    write_synced(staging / BASE.name / file, (theirs / file).read_bytes())
                else:
                    write_synced(staging / BASE.name / (file + ".none"), b"")  # no longer generated
        write_synced(staging / COMPLETE, b"")
    except OSError as err:
        shutil.rmtree(staging, ignore_errors=True)
        raise TricksError(f"cannot write in {project / '.tricks'}: {reason(err)}") from None
    move_in(project, staging)


def write_synced(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def move_in(project: Path, staging: Path) -> None:
    """Move a complete staging's files into place (each rename atomic), the base last; then drop it."""
    removed = read(staging / REMOVED).split() if (staging / REMOVED).exists() else []
    for path in sorted(p for p in staging.iterdir() if p.is_file() and p.name not in (COMPLETE, REMOVED)):
        os.replace(path, project / path.name)
    for name in removed:
        (project / name).unlink(missing_ok=True)
    staged_base = staging / BASE.name
    if staged_base.is_dir():
        for path in staged_base.iterdir():
            if path.name.endswith(".none"):  # the base has no such file any more
                (project / BASE / path.name.removesuffix(".none")).unlink(missing_ok=True)
                path.unlink()
            else:
                os.replace(path, project / BASE / path.name)
    shutil.rmtree(staging)


def diff(project: Path) -> str:
    """The user's own edits: each generated file against the render it came from, as a unified diff."""
    project, _, _ = open_project(project)
    chunks = []
    for file in GENERATED:
        ours, base = project / file, project / BASE / file
        old = read(base).splitlines(keepends=True) if base.exists() else []
        new = read(ours).splitlines(keepends=True) if ours.exists() else []
        chunks += difflib.unified_diff(old, new, f"{file} (generated)", f"{file} (yours)")
    return "".join(chunks)
