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

import contextlib
import difflib
import fcntl
import os
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from generator.base import ANSWERS, BASE, GENERATED
from generator.errors import TricksError, UsageError
from generator.imports import PLACEHOLDER, import_block, merge_lines, write_block
from generator.options import Options
from generator.render import reason, render_project
from generator.tricks import lookup

OPTIONAL = ("slurm.sbatch",)  # generated with some tricks only (--ddp): added and removed with them
STAGING = Path(".tricks") / "staging"
LOCK = Path(".tricks") / "lock"  # held by the command changing the project: a second one is refused
COMPLETE = "COMPLETE"  # in the staging folder: every staged file is whole, so moving them in may begin
REMOVED = "REMOVED"  # in the staging folder: the generated files to delete, one per line


@dataclass
class Merged:
    name: str
    text: str  # the merged file (with conflict markers where the two sides met)
    status: str  # updated, unchanged, conflict; added or removed (an OPTIONAL file)
    conflicts: list[str]  # per conflict: where it is and its two sides, in a line


@contextlib.contextmanager
def opened(project: Path):
    """The project's folder, its recorded options and name, locked for this command; refused when it is not a
    tricks project, or when another tricks command is changing it."""
    project = Path(project).absolute()
    if not (project / ANSWERS).is_file():
        raise UsageError(f"{project} is not a tricks project: it has no {ANSWERS}")
    try:
        (project / LOCK.parent).mkdir(exist_ok=True)
        lock = os.open(project / LOCK, os.O_RDWR | os.O_CREAT)
    except OSError as err:
        raise TricksError(f"cannot write in {project / LOCK.parent}: {reason(err)}") from None
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the kernel releases it however the command ends
        except BlockingIOError:
            raise UsageError(f"another tricks command is changing {project}; run this one when it has ended") from None
        yield open_project(project)
    finally:
        os.close(lock)


def open_project(project: Path) -> tuple[Path, Options, str]:
    """The locked project, with what an earlier command left half done finished first."""
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
    if staging.is_dir() and (staging / COMPLETE).exists():
        move_in(project, staging)
    else:
        discard(staging)


def discard(staging: Path) -> None:
    """Remove a staging folder, or whatever else stands at its name."""
    if staging.is_dir() and not staging.is_symlink():
        shutil.rmtree(staging)
    elif staging.exists() or staging.is_symlink():
        staging.unlink()


def markers_in(project: Path) -> list[str]:
    """The generated files that hold conflict markers left by `--conflicts markers`."""
    found = []
    for name in GENERATED:
        path = project / name
        if path.is_file() and any(line.startswith(("<<<<<<< ", ">>>>>>> ")) for line in read(path).splitlines()):
            found.append(name)
    return found


def read(path: Path) -> str:
    """A file's text; bytes that are not UTF-8 (a latin-1 comment) are kept as they are, through the merge."""
    return path.read_text(encoding="utf-8", errors="surrogateescape")


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


def merge_file(name: str, ours: Path, base: Path, theirs: Path, project: Path) -> Merged:
    """The user's file (ours), the old render (base) and the new render (theirs), merged: requirements.txt's
    lines and a script's import block as sets (generator/imports.py), the rest by git merge-file."""
    texts = [read(ours), read(base) if base.exists() else "", read(theirs)]
    if name == "requirements.txt":
        lines = [[line for line in text.splitlines() if line.strip()] for text in texts]
        text = "".join(line + "\n" for line in merge_lines(*lines))
    elif name.endswith(".py") and all(blocks := [import_block(text) for text in texts]):
        apart = [block.before + PLACEHOLDER + block.after for block in blocks]
        text = merge_text(name, *apart).replace(PLACEHOLDER, merged_imports(*blocks, texts, project))
    else:
        text = merge_text(name, *texts)
    conflicts = describe_conflicts(name, text)
    status = "conflict" if conflicts else ("unchanged" if text == texts[0] else "updated")
    return Merged(name, text, status, conflicts)


def merged_imports(ours, base, theirs, texts: list[str], project: Path) -> str:
    """The import block of the merge: a side's own text where the other left the imports as they were, else
    the user's and the new render's changes together, in isort's order."""
    if ours.items == base.items:
        return block_text(texts[2], theirs)
    if theirs.items == base.items:
        return block_text(texts[0], ours)
    return write_block((theirs.items - (base.items - ours.items)) | (ours.items - base.items), project)


def block_text(text: str, block) -> str:
    return text[len(block.before) : len(text) - len(block.after)]


def merge_text(name: str, ours: str, base: str, theirs: str) -> str:
    """git merge-file of three texts."""
    command = ["git", "merge-file", "-p", "-L", f"{name} (yours)", "-L", f"{name} (before)", "-L", f"{name} (new)"]
    with tempfile.TemporaryDirectory(prefix="tricks-merge-") as tmp:
        paths = []
        for side, text in zip(("ours", "base", "theirs"), (ours, base, theirs), strict=True):
            paths.append(Path(tmp) / side)
            paths[-1].write_text(text, encoding="utf-8", errors="surrogateescape")
        try:
            result = subprocess.run([*command, *paths], capture_output=True, check=False)
        except FileNotFoundError:
            raise TricksError("tricks add, remove and update need git (git merge-file) on the PATH") from None
    if result.returncode < 0 or result.returncode > 127:
        raise TricksError(f"git merge-file failed on {name}: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout.decode("utf-8", errors="surrogateescape")


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
    and the merge base move to the new render at once (as copier does): once the user has resolved the
    markers, the project is what the command makes, and the next command works from there."""
    if not update and not add and not remove:
        raise UsageError("name the tricks to add or remove")
    with opened(project) as (project, options, name):
        if found := markers_in(project):
            raise UsageError(f"{', '.join(found)} hold conflict markers from an earlier merge: resolve them first")
        return merged_into(project, options, name, add, remove, markers)


def merged_into(project: Path, options: Options, name: str, add, remove, markers: bool) -> list[Merged]:
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
                merged.append(merge_file(file, ours, base, new, project))
        if markers or not any(m.conflicts for m in merged):
            check_replaceable(project, merged)
            stage(project, merged, theirs)
    return merged


def check_replaceable(project: Path, merged: list[Merged]) -> None:
    """Refuse, before anything moves, a file the command cannot or should not replace: read-only (its mode says
    keep it), immutable, or in a folder that refuses writes."""
    for m in merged:
        path = project / m.name
        if m.status in ("unchanged", "added") or not path.exists():
            continue
        target = path.resolve()
        if not os.stat(target).st_mode & stat.S_IWUSR:
            raise TricksError(f"{path} is read-only; make it writable (chmod u+w) to let the command change it")
        try:
            with open(target, "ab"):  # opens for writing without changing a byte: fails on an immutable file
                pass
            probe = tempfile.NamedTemporaryFile(dir=target.parent, prefix=".tricks-probe-")
            probe.close()
        except OSError as err:
            raise TricksError(f"cannot change {path}: {reason(err)}; nothing was changed") from None


def unrendered(name: str, ours: Path, base: Path) -> Merged:
    """An optional file that the new render no longer writes: removed if the user left it as generated, else a
    conflict (their edits would be lost)."""
    if read(ours) == read(base):
        return Merged(name, "", "removed", [])
    return Merged(
        name, read(ours), "conflict", [f"{name}: yours is edited; the new render has no {name} (move it away)"]
    )


def stage(project: Path, merged: list[Merged], theirs: Path) -> None:
    """Write every changed file into the staging folder, with the answers file and the merge base of the new
    render (`theirs`), mark it complete, then move the files in."""
    staging = project / STAGING
    try:
        discard(staging)
        (staging / BASE.name).mkdir(parents=True)
        for m in merged:
            if m.status not in ("unchanged", "removed"):
                write_synced(staging / m.name, m.text.encode("utf-8", errors="surrogateescape"))
        write_synced(staging / REMOVED, "".join(f"{m.name}\n" for m in merged if m.status == "removed").encode())
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
        replace(path, project / path.name)
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


def replace(staged: Path, path: Path) -> None:
    """Move a staged file in place of path, keeping path's mode; through a symbolic link, into the file it names
    (staged beside it first: a rename does not cross file systems)."""
    if path.is_symlink():
        target = path.resolve()
        beside = target.with_name(f".{target.name}.tricks-new")
        shutil.copyfile(staged, beside)
        os.chmod(beside, stat.S_IMODE(os.stat(target).st_mode))
        os.replace(beside, target)
        staged.unlink()  # last: a kill before it moves the file in again
        return
    if path.exists():
        os.chmod(staged, stat.S_IMODE(os.stat(path).st_mode))
    os.replace(staged, path)


def diff(project: Path) -> str:
    """The user's own edits: each generated file against the render it came from, as a unified diff."""
    with opened(project) as (project, _, _):
        chunks = []
        for file in GENERATED:
            ours, base = project / file, project / BASE / file
            old = read(base).splitlines(keepends=True) if base.exists() else []
            new = read(ours).splitlines(keepends=True) if ours.exists() else []
            chunks += difflib.unified_diff(old, new, f"{file} (generated)", f"{file} (yours)")
        return "".join(chunks)
