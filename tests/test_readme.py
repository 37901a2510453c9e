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


def test_readme_quickstart_is_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("##", 1)[0]
    commands = [line.split("#")[0].strip() for line in quickstart.splitlines() if line.startswith("    ")]
    assert commands == ["make demo", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
