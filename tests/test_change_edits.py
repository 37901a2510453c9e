"""tricks add / remove / update / diff on projects edited as users edit them: an import added and the loss
changed (the import block and requirements.txt merge as sets), the conflict-markers workflow to its end, and
files a merge meets in the wild (symbolic links, modes, non-UTF-8 bytes, read-only files, a second command
at once, a stray file where the staging folder goes)."""

import fcntl
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from generator.change import ANSWERS, BASE, LOCK, STAGING, change, diff
from generator.cli import app
from generator.errors import TricksError, UsageError
from generator.options import Options, Task
from generator.render import generate
from generator.tricks import TRICKS
from tests.test_change import hashes

LOSS = {
    "classify": ("return F.cross_entropy(model(x), y)", "return F.cross_entropy(model(x), y, label_smoothing=0.1)"),
    "gan": ("return -critic(fake).mean()", "return -critic(fake).mean() * 1.5"),
    "image": ("return F.cross_entropy(logits, y)", "return F.cross_entropy(logits, y, label_smoothing=0.1)"),
    "lm": ("return F.cross_entropy(model(x).flatten(0, 1), y.flatten())",
           "return F.cross_entropy(model(x).flatten(0, 1), y.flatten(), label_smoothing=0.1)"),
}  # fmt: skip


IMPORT = {"image": ("\nfrom PIL import Image, ImageDraw\n", "\nfrom PIL import Image, ImageDraw, ImageOps\n")}


def edit(text: str, task: str) -> str:
    """Two imports added (in isort's places), the loss line changed."""
    for old, new in [
        ("\nimport io\n", "\nimport io\nimport itertools\n"),
        IMPORT.get(task, ("\nfrom torch import nn\n", "\nfrom PIL import Image\nfrom torch import nn\n")),
        LOSS[task],
    ]:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def edited(dest: Path, task: str, tricks) -> Path:
    generate(Options.create(task, **dict.fromkeys(tricks, True)), dest)
    (dest / "train.py").write_text(edit((dest / "train.py").read_text(), task))
    requirements = (dest / "requirements.txt").read_text().replace("\npytest", "\npillow  # mine\npytest")
    (dest / "requirements.txt").write_text(requirements)
    return dest


CASES = [(task.value, trick.name) for task in Task for trick in TRICKS if task in trick.tasks and trick.name != "gp"]


@pytest.mark.parametrize(("task", "trick"), CASES)
def test_an_added_import_and_a_changed_loss_survive_adding_and_removing_each_trick(tmp_path, task, trick):
    """Each trick added to, then removed from, a project with both edits and a line added to requirements.txt:
    clean each way, equal to the render with the trick and the same edits, then to the edited project again."""
    base = ["gp", "ema"] if task == "gan" else ["ema"]
    start = [name for name in base if name != trick]
    project = edited(tmp_path / "p", task, start)
    before = hashes(project)
    merged = change(project, add=[trick])
    assert not [line for m in merged for line in m.conflicts]
    expected = edited(tmp_path / "expected" / "p", task, [*start, trick])
    for name in ("train.py", "requirements.txt"):
        assert (project / name).read_text() == (expected / name).read_text(), name
    merged = change(project, remove=[trick])
    assert not [line for m in merged for line in m.conflicts]
    assert {k: v for k, v in hashes(project).items() if not k.startswith(".tricks")} == {
        k: v for k, v in before.items() if not k.startswith(".tricks")
    }


def test_the_markers_workflow_ends(tmp_path):
    """A conflict written as markers: the answers file and the base move to the new render at once, commands
    refuse the project until the markers are resolved, and then the next command works from there."""
    project = edited(tmp_path / "p", "classify", ["seed"])
    text = (project / "train.py").read_text()
    (project / "train.py").write_text(
        text.replace("            loss.backward()\n", "            loss.backward()  # mine\n")
    )
    change(project, add=["amp"], markers=True)
    assert "amp: true" in (project / ANSWERS).read_text()
    with pytest.raises(UsageError, match="hold conflict markers"):
        change(project, add=["clip"])
    marked = (project / "train.py").read_text()
    yours, rest = marked.split("<<<<<<< train.py (yours)\n", 1)[1].split("=======\n", 1)
    new, after = rest.split(">>>>>>> train.py (new)\n", 1)
    (project / "train.py").write_text(marked.split("<<<<<<< ")[0] + new + after)  # the user takes the new side
    with pytest.raises(UsageError, match="amp is already on"):
        change(project, add=["amp"])
    assert not [line for m in change(project, add=["clip"]) for line in m.conflicts]
    expected = edited(tmp_path / "expected" / "p", "classify", ["seed", "amp", "clip"])
    assert (project / "train.py").read_text() == (expected / "train.py").read_text()


def test_a_second_command_at_once_is_refused_in_one_line(tmp_path):
    project = edited(tmp_path / "p", "classify", ["seed"])
    before = hashes(project)
    lock = os.open(project / LOCK, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running `tricks add` holds it
        result = CliRunner().invoke(app, ["add", "amp", "--project", str(project)])
    finally:
        os.close(lock)
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: another tricks command is changing")
    assert hashes(project) == before


def test_two_commands_started_together_leave_a_consistent_project(tmp_path):
    """`tricks add amp & tricks add ema`, five times: one of them changes the project, or both one after the
    other; the answers, the base and train.py always agree, and a refused one exits 2 having changed nothing."""
    tricks = str(Path(sys.executable).parent / "tricks")
    for attempt in range(5):
        project = edited(tmp_path / f"p{attempt}", "classify", ["seed"])
        runs = [subprocess.Popen([tricks, "add", name], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                 text=True) for name in ("amp", "ema")]  # fmt: skip
        results = [(run.wait(timeout=120), run.stderr.read()) for run in runs]
        done = [name for name, (code, _) in zip(("amp", "ema"), results, strict=True) if code == 0]
        assert all(code == 0 or (code == 2 and "another tricks command" in err) for code, err in results), results
        answers = (project / ANSWERS).read_text()
        assert (project / BASE / ANSWERS).read_text() == answers
        for name, marker in (("amp", "scaler"), ("ema", "update_ema")):
            assert (f"{name}: true" in answers) == (name in done) == (marker in (project / "train.py").read_text())


def test_a_symlinked_train_py_is_written_through_and_modes_are_kept(tmp_path):
    project = edited(tmp_path / "p", "classify", ["seed"])
    elsewhere = tmp_path / "mine" / "train.py"
    elsewhere.parent.mkdir()
    os.replace(project / "train.py", elsewhere)
    (project / "train.py").symlink_to(elsewhere)
    os.chmod(elsewhere, 0o755)
    os.chmod(project / "README.md", 0o600)
    change(project, add=["amp"])
    assert (project / "train.py").is_symlink() and "scaler" in elsewhere.read_text()
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755
    assert stat.S_IMODE((project / "README.md").stat().st_mode) == 0o600


def test_a_byte_that_is_not_utf8_survives_add_update_and_diff(tmp_path):
    project = edited(tmp_path / "p", "classify", ["seed"])
    with open(project / "train.py", "ab") as f:
        f.write(b"# caf\xe9\n")
    change(project, add=["amp"])
    change(project, update=True)
    assert (project / "train.py").read_bytes().endswith(b"# caf\xe9\n")
    assert "caf" in diff(project)
    result = CliRunner().invoke(app, ["diff", "--project", str(project)])
    assert result.exit_code == 0


def test_a_read_only_train_py_is_refused_before_anything_moves(tmp_path):
    project = edited(tmp_path / "p", "classify", ["seed"])
    os.chmod(project / "train.py", 0o444)
    before = hashes(project)
    result = CliRunner().invoke(app, ["add", "amp", "--project", str(project)])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == f"error: {project / 'train.py'} is read-only; make it writable " \
        "(chmod u+w) to let the command change it"  # fmt: skip
    assert hashes(project) == before and "amp: false" in (project / ANSWERS).read_text()
    os.chmod(project / "train.py", 0o644)
    assert not [line for m in change(project, add=["amp"]) for line in m.conflicts]


def test_an_immutable_train_py_is_refused_before_anything_moves(tmp_path):
    project = edited(tmp_path / "p", "classify", ["seed"])
    if subprocess.run(["chattr", "+i", project / "train.py"], capture_output=True, check=False).returncode:
        pytest.skip("chattr +i is not allowed here (it needs CAP_LINUX_IMMUTABLE)")
    try:
        before = hashes(project)
        with pytest.raises(TricksError, match="cannot change .*train.py: operation not permitted; nothing was"):
            change(project, add=["amp"])
        assert hashes(project) == before
    finally:
        subprocess.run(["chattr", "-i", project / "train.py"], check=True)


def test_a_file_where_the_staging_folder_goes_is_cleared(tmp_path):
    project = edited(tmp_path / "p", "classify", ["seed"])
    (project / STAGING).write_text("stray")
    assert not [line for m in change(project, add=["amp"]) for line in m.conflicts]
    assert not (project / STAGING).exists() and "scaler" in (project / "train.py").read_text()
