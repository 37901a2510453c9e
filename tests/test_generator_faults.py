"""The generator's faults: each a user can cause ends in one line and leaves their files as they were."""

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults import hashes, one_line


def tricks_cli(*args, cwd=None):
    """`tricks ARGS` as a user runs it: a process of its own."""
    return subprocess.run(
        [Path(sys.executable).parent / "tricks", *map(str, args)], cwd=cwd, capture_output=True, text=True, check=False
    )


@pytest.mark.parametrize("dest", [".", ""])
def test_new_into_the_empty_folder_you_stand_in_renders_in_place(tmp_path, dest):
    here = tmp_path / "exp"
    here.mkdir()
    here.chmod(0o2750)
    before = here.stat()
    result = tricks_cli("new", dest, "--seed", cwd=here)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == "next: python train.py"
    after = here.stat()
    assert (after.st_ino, after.st_mode, after.st_gid) == (before.st_ino, before.st_mode, before.st_gid)
    assert (here / "train.py").is_file() and "tricks new exp --seed" in (here / "train.py").read_text()


def test_force_with_a_folder_where_a_file_goes_changes_nothing(tmp_path):
    dest = tmp_path / "exp"
    assert tricks_cli("new", dest).returncode == 0
    (dest / "README.md").unlink()
    (dest / "README.md").mkdir()  # a folder where the project writes a file
    (dest / "README.md" / "notes.txt").write_text("mine")
    before = {p: p.read_bytes() if p.is_file() else None for p in dest.rglob("*")}
    result = tricks_cli("new", dest, "--force", "--seed")
    assert result.returncode == 1
    assert one_line(result.stderr) == (
        f"error: {dest / 'README.md'} is a folder where the project writes a file; move it and try again"
    )
    assert {p: p.read_bytes() if p.is_file() else None for p in dest.rglob("*")} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"], "no staging folder is left"


def test_force_swaps_the_whole_project_in_one_step(tmp_path, monkeypatch):
    """Until the swap the old project is whole on disk; the swap (renameat2 RENAME_EXCHANGE) is one step; after
    it the new one is whole: a kill -9 at any moment leaves one or the other."""
    from generator import render as rendering
    from generator.options import Options

    dest = tmp_path / "exp"
    rendering.generate(Options.create(), dest)
    (dest / "mine.txt").write_text("kept")
    old = hashes(dest)
    exchange, seen = rendering.exchange, []

    def checked_exchange(a, b):
        seen.append(hashes(b))  # the moment before the swap: dest is the old project, untouched
        exchange(a, b)

    monkeypatch.setattr(rendering, "exchange", checked_exchange)
    rendering.generate(Options.create(seed=True), dest, force=True)
    assert seen == [old]
    assert hashes(dest)["mine.txt"] == old["mine.txt"] and "--seed" in (dest / "train.py").read_text()
    assert (dest / "train.py.bak").read_bytes() != (dest / "train.py").read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_the_re_render_command_is_shell_quoted(tmp_path):
    dest = tmp_path / "it's my exp"
    assert tricks_cli("new", dest, "--seed", "--amp").returncode == 0
    header = (dest / ".tricks-answers.yml").read_text().splitlines()[1]
    command = shlex.split(header.removeprefix("#"))
    assert command == ["tricks", "new", "it's my exp", "--force", "--answers", "it's my exp/.tricks-answers.yml"]
    for name in ("README.md", "train.py"):
        assert "tricks new 'it'\"'\"'s my exp' --seed --amp" in (dest / name).read_text()
    again = tricks_cli(*command[1:], cwd=tmp_path)  # pasted in the folder above the project: renders it again
    assert again.returncode == 0, again.stderr


@pytest.mark.parametrize(
    ("answers", "message"),
    [
        (b"seed: true\n\xff\xfe\n", "is not UTF-8 text"),
        (b"1: true\n", "1 is not a name of an answer"),
        (b'_tricks_version: "99.0.0"\nseed: true\n', "was written by torch-tricks 99.0.0, newer than this one"),
        (b'_tricks_version: "next"\n', "_tricks_version 'next' in the answers file is not a version"),
        (b"project_name: ../elsewhere\n", "project_name '../elsewhere' is not a plain folder name"),
        (b"project_name: /etc\n", "project_name '/etc' is not a plain folder name"),
        (b"project_name: ..\n", "project_name '..' is not a plain folder name"),
    ],
)
def test_a_bad_answers_file_is_one_line(tmp_path, answers, message):
    (tmp_path / "answers.yml").write_bytes(answers)
    result = tricks_cli("new", "--answers", tmp_path / "answers.yml", cwd=tmp_path)
    assert result.returncode == 2
    assert message in one_line(result.stderr) and one_line(result.stderr).startswith("error: ")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["answers.yml"]


def test_an_error_without_a_strerror_is_one_line(tmp_path, monkeypatch):
    """shutil.Error carries no strerror: its message is used instead."""
    from typer.testing import CliRunner

    from generator import render as rendering
    from generator.cli import app

    dest = tmp_path / "exp"
    assert tricks_cli("new", dest).returncode == 0

    def copy_fails(source, target, **kwargs):
        raise shutil.Error([(source, target, "Input/output error")])

    monkeypatch.setattr(rendering.shutil, "copytree", copy_fails)
    result = CliRunner().invoke(app, ["new", str(dest), "--force"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert one_line(result.stderr).startswith(f"error: cannot write {dest}: ") and "input/output error" in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exp"]


def test_a_killed_render_leaves_no_staging_folder(tmp_path):
    """SIGTERM while the project renders: the staging folder goes, and the exit code says why."""
    slow_render = (
        "import sys, time\n"
        "from generator import cli, render\n"
        "real = render.render_project\n"
        "def slow(*args):\n"
        "    project = real(*args)\n"
        "    print('rendered', flush=True)\n"
        "    time.sleep(60)\n"
        "    return project\n"
        "render.render_project = slow\n"
        "sys.argv = ['tricks', 'new', sys.argv[1]]\n"
        "cli.main()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", slow_render, str(tmp_path / "exp")], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert process.stdout.readline() == b"rendered\n"
    assert any(p.name.startswith(".exp.tricks-") for p in tmp_path.iterdir())
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143 and b"Traceback" not in stderr
    assert list(tmp_path.iterdir()) == []


def test_tricks_alone_prints_the_help_and_nothing_else():
    result = tricks_cli()
    assert result.returncode == 2 and result.stderr == ""
    assert result.stdout.startswith("Usage: tricks [OPTIONS] COMMAND") and "error" not in result.stdout


def test_help_shows_no_value_beside_flags_and_created_names_tricks_as_flags(tmp_path):
    help_text = tricks_cli("new", "--help").stdout
    assert "<bool>" not in help_text and "BOOLEAN" not in help_text
    assert "  --lr-plot " in help_text
    result = tricks_cli("new", tmp_path / "exp", "--lr-plot", "--early-stop")
    assert result.stdout.splitlines()[0] == f"created {tmp_path / 'exp'}/ with lr-plot, early-stop (classify)"


def test_a_template_that_renders_invalid_python_is_one_line_naming_the_file_and_line(tmp_path):
    from generator.errors import TemplateError
    from generator.render import format_python

    (tmp_path / "train.py").write_text("def broken(:\n    pass\n")
    with pytest.raises(TemplateError) as error:
        format_python(tmp_path)
    assert str(error.value).startswith("template error: the rendered project is not valid Python: error: Failed")
    assert "train.py:1:12" in str(error.value)
