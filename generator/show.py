"""A trick's code as it appears in a script: the lines that a render with the trick has and the same
render without it lacks. Both come from the templates, so `tricks show` has no copy of its own."""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from generator.options import Options, Task
from generator.render import render_script
from generator.tricks import Trick


@dataclass(frozen=True)
class Hunk:
    """Consecutive lines a trick adds or changes, and the function they stand in."""

    where: str  # "parse_args()", "top level"...
    first_line: int  # 1-based, in the script with the trick
    lines: list[str]


def trick_task(trick: Trick, task: Task | None) -> Task:
    """The task to show a trick in: the one asked for, else the first it applies to."""
    return task if task is not None else trick.tasks[0]


def trick_hunks(trick: Trick, task: Task | None = None) -> list[Hunk]:
    task = trick_task(trick, task)
    without = render_script(Options(task=task)).splitlines()
    with_trick = render_script(Options(task=task, **{trick.name: True})).splitlines()
    matcher = difflib.SequenceMatcher(a=without, b=with_trick, autojunk=False)
    return [
        Hunk(enclosing(with_trick, j1), j1 + 1, with_trick[j1:j2])
        for tag, _, _, j1, j2 in matcher.get_opcodes()
        if tag in ("insert", "replace")
    ]


def enclosing(lines: list[str], index: int) -> str:
    """The function or class that line `index` stands in ("top level" for a new one)."""
    if not lines[index] or lines[index].startswith(("def ", "class ", "@")):
        return "top level"
    for line in reversed(lines[:index]):
        match = re.match(r"(?:def|class) (\w+)", line)
        if match:
            return f"{match.group(1)}()" if line.startswith("def") else match.group(1)
        if line and not line[0].isspace() and not line.startswith(("#", ")", "]", "}")):
            break
    return "top level"


def trick_knobs(trick: Trick, task: Task | None = None) -> list[str]:
    """The command-line options the trick adds to train.py."""
    added = "\n".join(line for hunk in trick_hunks(trick, task) for line in hunk.lines)
    return re.findall(r'add_argument\(\s*"(--[\w-]+)"', added)


def format_hunks(trick: Trick, hunks: list[Hunk], task: Task) -> str:
    """The hunks as code, each under a comment that says where it goes."""
    parts = [f"# {trick.flag} ({task.value}): {trick.summary}"]
    for hunk in hunks:
        parts.append(f"\n# train.py line {hunk.first_line}, in {hunk.where}:")
        parts.extend(hunk.lines)
    return "\n".join(parts) + "\n"
