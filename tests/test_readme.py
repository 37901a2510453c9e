"""The README's table of tricks says what the catalogue and the templates say."""

from generator.show import trick_knobs
from generator.tricks import TRICKS
from tests.helpers import ROOT


def test_readme_table_matches_the_catalogue():
    readme = (ROOT / "README.md").read_text()
    for trick in TRICKS:
        knobs = " ".join(f"`{knob}`" for knob in trick_knobs(trick)) or "-"
        tasks = ", ".join(task.value for task in trick.tasks)
        row = f"| `{trick.flag}` | {tasks} | {knobs} | {trick.summary} |"
        assert row in readme, f"README lacks or misstates: {row}"


def code_blocks(text: str) -> list[list[str]]:
    """The indented code blocks of a Markdown text, each a list of its lines without the indent."""
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("    "):
            current.append(line[4:])
        elif current:
            blocks.append(current)
            current = []
    return blocks


def test_readme_quickstart_is_the_two_commands_then_what_make_demo_prints():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    install, then = code_blocks(quickstart)
    assert [line.split("#")[0].strip() for line in install] == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    # make demo prints the next commands, activating the .venv first: the same lines as the README's
    makefile = (ROOT / "Makefile").read_text().replace("$(VENV)", ".venv")
    printed = [line.split('@echo "    ', 1)[1].rstrip('"') for line in makefile.splitlines() if '@echo "    ' in line]
    assert printed == then and then[0] == ". .venv/bin/activate"
