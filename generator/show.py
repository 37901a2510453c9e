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
    code_starts = next(i for i, line in enumerate(with_trick) if line.startswith("import "))  # after the docstring
    matcher = difflib.SequenceMatcher(a=without, b=with_trick, autojunk=False)
    hunks = []
    for tag, _, _, j1, j2 in matcher.get_opcodes():
        while j1 < j2 and not with_trick[j1].strip():
            j1 += 1
        while j2 > j1 and not with_trick[j2 - 1].strip():
            j2 -= 1
        if tag in ("insert", "replace") and j1 >= code_starts and j2 > j1:
            hunks.append(Hunk(enclosing(with_trick, j1), j1 + 1, with_trick[j1:j2]))
    return hunks


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
    """The command-line options the trick adds to train.py (not those whose default it changes)."""
    options = re.compile(r'add_argument\(\s*"(--[\w-]+)"')
    base = set(options.findall(render_script(Options(task=trick_task(trick, task)))))
    added = "\n".join(line for hunk in trick_hunks(trick, task) for line in hunk.lines)
    return [knob for knob in options.findall(added) if knob not in base]


def format_hunks(trick: Trick, hunks: list[Hunk], task: Task) -> str:
    """The hunks as code, each under a comment that says where it goes."""
    parts = [f"# {trick.flag} ({task.value}): {trick.summary}"]
    for hunk in hunks:
        parts.append(f"\n# train.py line {hunk.first_line}, in {hunk.where}:")
        parts.extend(hunk.lines)
    return "\n".join(parts) + "\n"
