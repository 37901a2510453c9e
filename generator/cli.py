"""The `tricks` command: Typer declarations only; the work is in render.py and show.py."""

from __future__ import annotations

import inspect
import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperGroup

from generator import __version__
from generator.errors import TricksError
from generator.options import Options, Task
from generator.render import DEFAULT_PROJECT_NAME, generate, render_script
from generator.tricks import TRICKS, lookup


class OneLineErrors(TyperGroup):
    """Reports a usage error or a TricksError as one line on stderr and an exit code: never a
    traceback, and not click's four-line usage block."""

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            result = super().main(*args, standalone_mode=False, **kwargs)
        except typer.TyperException as err:  # typer's own click: usage errors, bad values
            if type(err).__name__ == "NoArgsIsHelpError":  # `tricks` alone: the help, and nothing else to say
                typer.echo(err.format_message())
                sys.exit(err.exit_code)
            hint = f" (see: {err.ctx.command_path} --help)" if getattr(err, "ctx", None) else ""
            message, code = err.format_message() + hint, err.exit_code
        except TricksError as err:
            message, code = str(err), err.exit_code
        except typer.Abort:
            message, code = "aborted", 1
        else:
            sys.exit(result if isinstance(result, int) else 0)
        typer.echo(f"error: {message}", err=True)
        sys.exit(code)


EXAMPLES = """Examples:

    tricks new my-exp --seed --amp --clip --accumulate --lr-plot --early-stop

    tricks new gan-exp --amp --gp --early-stop

    tricks new --stdout --seed --amp > train.py

    tricks show accumulate
"""

app = typer.Typer(
    cls=OneLineErrors,
    help="Generate a plain-PyTorch train.py with exactly the training tricks you pick.",
    epilog=EXAMPLES,
    rich_markup_mode=None,  # plain help, as git's: flags without a "<bool>" beside them
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def show_version(value: bool) -> None:
    if value:
        typer.echo(f"torch-tricks {__version__}")
        raise typer.Exit()


@app.callback()
def tricks(
    version: Annotated[
        bool, typer.Option("--version", callback=show_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Generate a plain-PyTorch train.py with exactly the training tricks you pick."""


def new(
    dest: Path | None,
    task: Task | None,
    force: bool,
    stdout: bool,
    answers: Path | None,
    **tricks: bool,
) -> None:
    """Create a project: train.py with the chosen tricks, its README, requirements, a smoke test
    and the answers file that records the choices."""
    project_name = dest.absolute().name if dest else DEFAULT_PROJECT_NAME
    chosen = {name: True for name, on in tricks.items() if on}
    if answers:
        recorded, recorded_name = Options.from_answers(answers)
        task = task or recorded.task
        chosen = {name: True for name in recorded.tricks} | chosen
        project_name = dest.absolute().name if dest else recorded_name
    options = Options.create(task, **chosen)
    if stdout:
        typer.echo(render_script(options, project_name), nl=False)
        return
    dest = dest or Path(project_name)
    backups = generate(options, dest, force=force)
    names = [name.replace("_", "-") for name in options.tricks]
    typer.echo(f"created {dest}/ with {', '.join(names) or 'no tricks'} ({options.task.value})")
    for backup in backups:
        typer.echo(f"  kept the old {backup.name.split('.bak')[0]} as {backup.relative_to(dest.absolute())}")
    here = dest.absolute() == Path.cwd()
    typer.echo(f"next: {'' if here else f'cd {shlex.quote(str(dest))} && '}python train.py")


def new_signature() -> inspect.Signature:
    """`new`'s parameters: the fixed ones, then a flag per Options field, so that a trick added to
    Options and the catalogue gets its flag here with no further code."""
    keyword = inspect.Parameter.KEYWORD_ONLY
    fixed = [
        inspect.Parameter(
            "dest",
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Argument(help=f"Folder to create (default: ./{DEFAULT_PROJECT_NAME}).", show_default=False),
            ],
        ),
        inspect.Parameter(
            "task",
            keyword,
            default=None,
            annotation=Annotated[
                Task | None,
                typer.Option(help="What train.py trains (default: gan with --gp, else classify).", show_default=False),
            ],
        ),
    ]
    tricks = [
        inspect.Parameter(
            trick.name,
            keyword,
            default=False,
            annotation=Annotated[bool, typer.Option(trick.flag, help=trick.summary)],
        )
        for trick in TRICKS
    ]
    rest = [
        inspect.Parameter(
            "force",
            keyword,
            default=False,
            annotation=Annotated[
                bool, typer.Option("--force", help="Write into a non-empty DEST; replaced files are kept as .bak.")
            ],
        ),
        inspect.Parameter(
            "stdout",
            keyword,
            default=False,
            annotation=Annotated[bool, typer.Option("--stdout", help="Print train.py only; write nothing.")],
        ),
        inspect.Parameter(
            "answers",
            keyword,
            default=None,
            annotation=Annotated[
                Path | None,
                typer.Option(help="Take the choices from a project's .tricks-answers.yml (flags add to them)."),
            ],
        ),
    ]
    return inspect.Signature(fixed + tricks + rest)


new.__signature__ = new_signature()
app.command(epilog=EXAMPLES)(new)


@app.command()
def plot(
    runs: Annotated[
        list[Path],
        typer.Argument(help="Run folders, each with the metrics.csv its train.py wrote.", show_default=False),
    ],
    out: Annotated[Path, typer.Option(help="The PNG to write.")] = Path("runs.png"),
) -> None:
    """Draw runs' metrics into one PNG: a panel per metric (losses, validation, learning rate, ...), the
    runs overlaid and labelled by folder and tricks."""
    from generator.plot import plot_runs

    notes: list[str] = []
    names = plot_runs(runs, out, notes)
    for note in notes:
        typer.echo(f"note: {note}", err=True)
    typer.echo(f"wrote {out}: {len(runs)} run{'s' if len(runs) > 1 else ''}, a panel each for {', '.join(names)}")


ProjectOption = Annotated[
    Path, typer.Option("--project", help="The project (default: the folder you are in).", show_default=False)
]
ConflictsOption = Annotated[
    str,
    typer.Option(
        "--conflicts",
        help="none: on a conflict, change nothing (the default); markers: write git's conflict markers into the files.",
    ),
]


def report_change(merged, markers: bool) -> None:
    """A line per file; conflicts named, with exit 1."""
    conflicts = [line for m in merged for line in m.conflicts]
    for m in merged if markers or not conflicts else []:  # with a conflict and no markers, nothing was written
        typer.echo(f"{m.status:9s} {m.name}" + (" (with conflict markers)" if m.status == "conflict" else ""))
    if conflicts:
        for line in conflicts:
            typer.echo(f"conflict: {line}", err=True)
        if markers:
            raise TricksError(
                f"{len(conflicts)} conflict(s) marked in the files; resolve them (the answers file already records "
                "the change: there is no need to run the command again)"
            )
        raise TricksError(
            f"{len(conflicts)} conflict(s) with your edits; nothing was changed "
            "(--conflicts markers writes them into the files)"
        )


def run_change(project: Path, conflicts: str, **what) -> None:
    """tricks add, remove or update: the merge, then a line per file."""
    from generator.change import change
    from generator.errors import UsageError

    if conflicts not in ("none", "markers"):
        raise UsageError(f"--conflicts {conflicts}: the choices are none and markers")
    markers = conflicts == "markers"
    report_change(change(project, markers=markers, **what), markers)


@app.command(context_settings={"ignore_unknown_options": True})  # --amp reads as the trick amp
def add(
    tricks: Annotated[list[str], typer.Argument(help="Tricks to add: amp ema, or --amp --ema.", show_default=False)],
    project: ProjectOption = Path("."),
    conflicts: ConflictsOption = "none",
) -> None:
    """Add tricks to a project you have edited, keeping your edits (a three-way merge, as git's)."""
    run_change(project, conflicts, add=tricks)


@app.command(context_settings={"ignore_unknown_options": True})  # --amp reads as the trick amp
def remove(
    tricks: Annotated[list[str], typer.Argument(help="Tricks to remove.", show_default=False)],
    project: ProjectOption = Path("."),
    conflicts: ConflictsOption = "none",
) -> None:
    """Remove tricks from a project you have edited, keeping your edits."""
    run_change(project, conflicts, remove=tricks)


@app.command()
def update(project: ProjectOption = Path("."), conflicts: ConflictsOption = "none") -> None:
    """Move a project to this torch-tricks version's templates, same tricks, keeping your edits."""
    run_change(project, conflicts, update=True)


@app.command("diff")
def diff_command(project: ProjectOption = Path(".")) -> None:
    """Your own edits: the project's files against what torch-tricks generated for them."""
    from generator.change import diff

    # as bytes: a file's bytes that are not UTF-8 (kept through the merges) show as they are
    typer.echo(diff(project).encode("utf-8", errors="surrogateescape"), nl=False)


@app.command("list")
def list_tricks() -> None:
    """The tricks: flag, what it does, the tasks it applies to, the options it adds to train.py."""
    from generator.show import trick_knobs

    rows = [("flag", "tasks", "adds to train.py", "what it does")]
    for trick in TRICKS:
        tasks = ", ".join(task.value for task in trick.tasks)
        rows.append((trick.flag, tasks, " ".join(trick_knobs(trick)) or "-", trick.summary))
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False)) + "  " + row[3])


@app.command()
def show(
    trick: Annotated[str, typer.Argument(help="A trick, e.g. amp or lr-plot (see: tricks list).", show_default=False)],
    task: Annotated[Task | None, typer.Option(help="Show it in this task's script.", show_default=False)] = None,
) -> None:
    """Print a trick's code as it appears in train.py, with where each piece goes."""
    from generator.errors import UsageError
    from generator.show import format_hunks, trick_hunks, trick_task

    chosen = lookup(trick)
    if task is not None and task not in chosen.tasks:
        raise UsageError(f"{chosen.flag} does not apply to --task {task.value}")
    typer.echo(format_hunks(chosen, trick_hunks(chosen, task), trick_task(chosen, task)), nl=False)


def main() -> None:
    # a kill (SIGTERM) unwinds like Ctrl-C, so that a render in progress removes its staging folder
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    app()
