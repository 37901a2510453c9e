"""The parts of a generated file that `tricks add/remove/update` merge as sets rather than as lines of text: a
script's import block and requirements.txt. Both are lists whose order is a convention (isort's, the render's),
so two sides that each add a line next to the same place never conflict: the user's additions and removals
and the new render's are each kept; the import block is written again in isort's order."""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

WIDTH = 120  # the generated project's ruff line length
PLACEHOLDER = "# (the import block, merged apart)\n"


@dataclass(frozen=True)
class Block:
    """A script's import block: the text before and after it, and what it imports, as (module, name) items:
    ("", "os") for `import os`, ("torch", "nn") for `from torch import nn`, aliases kept in the name."""

    before: str
    items: frozenset[tuple[str, str]]
    after: str


def import_block(text: str) -> Block | None:
    """The imports right after the module docstring, when they are plain imports and blank lines only (no
    comment, no code between them); else None, and the file is merged as text."""
    try:
        body = ast.parse(text).body
    except (SyntaxError, ValueError, UnicodeError):  # not Python, or bytes that are not UTF-8: merged as text
        return None
    start = 1 if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) else 0
    nodes = []
    for node in body[start:]:
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            break
        nodes.append(node)
    if not nodes:
        return None
    lines = text.splitlines(keepends=True)
    first, last = nodes[0].lineno, nodes[-1].end_lineno
    taken = {n for node in nodes for n in range(node.lineno, node.end_lineno + 1)}
    if any(lines[n - 1].strip() for n in range(first, last + 1) if n not in taken):
        return None  # a comment between the imports: the user's layout, merged as text
    if any(
        node.end_lineno != node.lineno and "#" in "".join(lines[node.lineno - 1 : node.end_lineno]) for node in nodes
    ):
        return None
    items = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            items |= {("", alias_text(alias)) for alias in node.names}
        else:
            module = "." * node.level + (node.module or "")
            items |= {(module, alias_text(alias)) for alias in node.names}
    return Block("".join(lines[: first - 1]), frozenset(items), "".join(lines[last:]))


def alias_text(alias: ast.alias) -> str:
    return f"{alias.name} as {alias.asname}" if alias.asname else alias.name


def merge_lines(ours: list[str], base: list[str], theirs: list[str]) -> list[str]:
    """The user's lines in the user's order, less those the new render dropped, with those it added each after
    the nearest line before it (in the new render) that the merge keeps: each side's change kept."""
    merged = [line for line in ours if line in theirs or line not in base]
    for i, line in enumerate(theirs):
        if line in base or line in merged:
            continue
        before = next((merged.index(prior) for prior in reversed(theirs[:i]) if prior in merged), -1)
        merged.insert(before + 1, line)
    return merged


def write_block(items, project: Path) -> str:
    """Import lines in isort's order (ruff's defaults): sections __future__, the standard library, third party,
    this project's own modules, a blank line between them; in each, `import` lines, then `from` lines, one per
    module with its names ordered constants, classes, the rest."""
    sections: dict[int, dict[str, set[str]]] = {}
    for module, name in items:
        top = (module or name).split(".")[0].split(" ")[0]
        if module == "__future__":
            section = 0
        elif top in sys.stdlib_module_names:
            section = 1
        elif module.startswith(".") or (project / f"{top}.py").exists() or (project / top).is_dir():
            section = 3
        else:
            section = 2
        sections.setdefault(section, {}).setdefault(module, set()).add(name)
    chunks = []
    for _, modules in sorted(sections.items()):
        lines = [f"import {name}" for name in sorted(modules.get("", ()), key=module_key)]
        for module in sorted((m for m in modules if m), key=module_key):
            lines.append(from_line(module, sorted(modules[module], key=name_key)))
        chunks.append("".join(line + "\n" for line in lines))
    return "\n".join(chunks)


def module_key(name: str) -> tuple[str, str]:
    return name.lower(), name


def name_key(name: str) -> tuple[int, str]:
    word = name.split(" ")[0]
    return (0 if word.isupper() else 1 if word[0].isupper() else 2), word


def from_line(module: str, names: list[str]) -> str:
    line = f"from {module} import {', '.join(names)}"
    if len(line) <= WIDTH:
        return line
    return f"from {module} import (\n" + "".join(f"    {name},\n" for name in names) + ")"
