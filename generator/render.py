"""Rendering: options in, a project folder out, through cookiecutter's API on templates/train.

generate() renders into a staging folder beside the destination and moves the result into place,
so a failed or interrupted render leaves nothing half-written."""

from __future__ import annotations

import ctypes
import filecmp
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from jinja2 import BytecodeCache

from generator import __version__
from generator.base import keep_base
from generator.errors import TemplateError, TricksError
from generator.options import Options

DEFAULT_PROJECT_NAME = "my-experiment"  # cookiecutter.json's default


class CompiledTemplates(BytecodeCache):
    """Compiled templates kept in memory. Cookiecutter makes a new Jinja environment for every
    render; sharing the compiled templates between them makes a render about ten times faster."""

    def __init__(self):
        self.store = {}

    def load_bytecode(self, bucket):
        if bucket.key in self.store:
            bucket.bytecode_from_string(self.store[bucket.key])

    def dump_bytecode(self, bucket):
        self.store[bucket.key] = bucket.bytecode_to_string()


COMPILED = CompiledTemplates()


def template_dir() -> Path:
    """The cookiecutter template: packaged inside `generator` in a wheel, at the repo root otherwise."""
    packaged = Path(__file__).parent / "templates" / "train"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "templates" / "train"


def cookiecutter_context(options: Options, project_name: str) -> dict:
    """cookiecutter.json's variables with these options' values, as `cookiecutter --no-input` resolves them."""
    from cookiecutter.generate import generate_context
    from cookiecutter.prompt import prompt_for_config

    extra = options.context(project_name, __version__)
    context = generate_context(str(template_dir() / "cookiecutter.json"), extra_context=extra)
    return dict(prompt_for_config(context, no_input=True))


def render_project(options: Options, project_name: str, output_dir: Path) -> Path:
    """Render the project into output_dir/project_name; returns that folder."""
    from cookiecutter.exceptions import CookiecutterException, UndefinedVariableInTemplate
    from cookiecutter.generate import generate_files
    from jinja2 import TemplateError as JinjaError

    context = {"cookiecutter": cookiecutter_context(options, project_name)}
    # cookiecutter hands these to jinja2.Environment
    context["cookiecutter"]["_jinja2_env_vars"] = {
        **context["cookiecutter"]["_jinja2_env_vars"],
        "bytecode_cache": COMPILED,
    }
    try:
        project = Path(generate_files(str(template_dir()), context, str(output_dir), accept_hooks=False))
    except UndefinedVariableInTemplate as err:
        raise TemplateError(f"template error: {err.message}: {err.error.message}") from err
    except JinjaError as err:
        where = f"{getattr(err, 'filename', None) or getattr(err, 'name', None) or 'template'}"
        line = getattr(err, "lineno", None)
        raise TemplateError(f"template error in {where}{f':{line}' if line else ''}: {err.message}") from err
    except CookiecutterException as err:
        raise TemplateError(f"template error: {err}") from err
    format_python(project)
    return project


def format_python(project: Path) -> None:
    """The project's Python files laid out by ruff's formatter, under the project's ruff.toml: the templates
    write each statement on one line and leave line breaks and wrapping to it (as the cookiecutter template's
    post-generation hook does for plain `cookiecutter`)."""
    from ruff.__main__ import find_ruff_bin

    files = sorted(str(path) for path in project.glob("*.py"))
    result = subprocess.run([find_ruff_bin(), "format", "--no-cache", *files], cwd=project, capture_output=True,
                            text=True, check=False)  # fmt: skip
    if result.returncode != 0:  # a template that renders invalid Python: ruff names the file and the line
        raise TemplateError(f"template error: the rendered project is not valid Python: {result.stderr.strip()}")


def render_script(options: Options, project_name: str = DEFAULT_PROJECT_NAME) -> str:
    """The train.py these options give."""
    with tempfile.TemporaryDirectory(prefix="tricks-") as tmp:
        return (render_project(options, project_name, Path(tmp)) / "train.py").read_text()


def generate(options: Options, dest: Path, *, force: bool = False) -> list[Path]:
    """Write the project to dest; returns the backups made of files it replaced (with force)."""
    dest = Path(dest).absolute()
    check_destination(dest, force)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tricks-", dir=dest.parent))
    except OSError as err:
        raise TricksError(f"cannot write in {dest.parent}: {reason(err)}") from None
    try:
        project = render_project(options, dest.name, staging)
        keep_base(project)  # the merge base of tricks add, remove and update
        if not dest.exists():
            os.replace(project, dest)  # a rename: the whole project appears at once
            return []
        check_replaceable(project, dest)
        if dest == Path.cwd() or dest in Path.cwd().parents:
            # the shell stands in dest: swapping the folder would leave it in a deleted one, so the files
            # are moved in one by one (a kill can leave some replaced; each is whole, and backed up)
            return replace_files(project, dest)
        assembled = staging / f"{dest.name}.new"
        shutil.copytree(dest, assembled, symlinks=True, copy_function=link_or_copy)
        backups = replace_files(project, assembled)
        keep_owner(dest, assembled)
        exchange(assembled, dest)  # the old project or the new one, whatever the moment of a kill
        return [dest / backup.relative_to(assembled) for backup in backups]
    except OSError as err:
        raise TricksError(f"cannot write {dest}: {reason(err)}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def reason(err: OSError) -> str:
    """An OSError's reason in a few words; shutil.Error and others carry no strerror."""
    return (err.strerror or str(err)).lower()


def check_destination(dest: Path, force: bool) -> None:
    if dest.is_file():
        raise TricksError(f"{dest} is a file; name a folder for the project")
    if dest.is_dir() and any(dest.iterdir()) and not force:
        raise TricksError(f"{dest} exists and is not empty; add --force to write over its files (kept as .bak)")


def check_replaceable(project: Path, dest: Path) -> None:
    """Refuse before anything changes when a file the project writes cannot take its place."""
    for source in project.rglob("*"):
        target = dest / source.relative_to(project)
        if source.is_file() and target.is_dir():
            raise TricksError(f"{target} is a folder where the project writes a file; move it and try again")
        if source.is_dir() and target.exists() and not target.is_dir():
            raise TricksError(f"{target} is a file where the project makes a folder; move it and try again")


def replace_files(project: Path, dest: Path) -> list[Path]:
    """Move each rendered file over its namesake in dest, backing up those whose content differs.
    Files in dest that the template does not write are left alone."""
    backups = []
    for source in sorted(p for p in project.rglob("*") if p.is_file()):
        target = dest / source.relative_to(project)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists() and not filecmp.cmp(source, target, shallow=False):
            backup = free_backup_name(target)
            shutil.copy2(target, backup)
            backups.append(backup)
        os.replace(source, target)
    return backups


def link_or_copy(source: str, target: str) -> None:
    """A second name for the file where the filesystem allows it (no copy of the data), else a copy."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def keep_owner(old: Path, new: Path) -> None:
    """The new folder gets the old one's mode, owner and group (copytree gave it the mode already)."""
    status = old.stat()
    if (new.stat().st_uid, new.stat().st_gid) != (status.st_uid, status.st_gid):
        os.chown(new, status.st_uid, status.st_gid)
    os.chmod(new, status.st_mode)


def exchange(a: Path, b: Path) -> None:
    """Swap the two paths in one atomic step (Linux's renameat2 with RENAME_EXCHANGE); where that is not
    to be had, with three renames, between which b is briefly missing."""
    libc = ctypes.CDLL(None, use_errno=True)
    swap = getattr(libc, "renameat2", None)
    at_cwd, rename_exchange = -100, 2
    if swap is not None and swap(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return
    aside = a.with_name(a.name + ".old")
    os.replace(b, aside)
    os.replace(a, b)
    os.replace(aside, a)


def free_backup_name(path: Path) -> Path:
    """path.bak, or path.bak.1, path.bak.2 ... when earlier backups exist: none is overwritten."""
    backup = path.with_name(path.name + ".bak")
    number = 0
    while backup.exists():
        number += 1
        backup = path.with_name(f"{path.name}.bak.{number}")
    return backup
