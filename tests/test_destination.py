"""Nothing is lost: `tricks new` refuses to write over a project, backs up what --force replaces,
and renders atomically (a failed render leaves nothing behind)."""

import os

import pytest
from typer.testing import CliRunner

from generator import render
from generator.cli import app
from generator.errors import TemplateError
from tests.test_cli import assert_one_line_error, snapshot

runner = CliRunner()


def tricks(*args):
    return runner.invoke(app, [str(arg) for arg in args])


def test_a_non_empty_folder_is_refused_and_untouched(tmp_path):
    dest = tmp_path / "exp"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    (dest / "train.py").write_text("my own script")
    before = snapshot(dest)
    assert_one_line_error(tricks("new", dest, "--amp"), 1, str(dest), "--force")
    assert snapshot(dest) == before


def test_an_empty_folder_is_used(tmp_path):
    (tmp_path / "exp").mkdir()
    assert tricks("new", tmp_path / "exp").exit_code == 0
    assert (tmp_path / "exp" / "train.py").is_file()


def test_force_backs_up_changed_files_and_deletes_nothing(tmp_path):
    dest = tmp_path / "exp"
    assert tricks("new", dest, "--seed").exit_code == 0
    (dest / "train.py").write_text("# my edits\n")
    (dest / "notes.txt").write_text("mine")
    readme = (dest / "README.md").read_text()
    result = tricks("new", dest, "--seed", "--amp", "--force")
    assert result.exit_code == 0, result.output
    assert (dest / "train.py.bak").read_text() == "# my edits\n"
    assert "autocast" in (dest / "train.py").read_text()
    assert (dest / "notes.txt").read_text() == "mine"
    assert (dest / "README.md.bak").read_text() == readme  # its content changed with --amp
    assert not (dest / "ruff.toml.bak").exists()  # unchanged files get no backup
    (dest / "train.py").write_text("# second edits\n")
    assert tricks("new", dest, "--seed", "--force").exit_code == 0
    assert (dest / "train.py.bak").read_text() == "# my edits\n"  # an older backup is never overwritten
    assert (dest / "train.py.bak.1").read_text() == "# second edits\n"


def test_dest_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "exp").write_text("a file")
    assert_one_line_error(tricks("new", tmp_path / "exp"), 1, "is a file")
    assert (tmp_path / "exp").read_text() == "a file"


@pytest.mark.parametrize("parent", ["under-a-file", "/proc/no-such-dir"])
def test_dest_that_cannot_be_written_is_refused(tmp_path, parent):
    if parent == "under-a-file":
        (tmp_path / "under-a-file").write_text("x")
        parent = tmp_path / "under-a-file"
    assert_one_line_error(tricks("new", os.path.join(parent, "exp")), 1, "cannot write")


def test_a_failing_render_leaves_nothing_behind(tmp_path, monkeypatch):
    def fail_halfway(options, project_name, output_dir):
        (output_dir / project_name).mkdir()
        (output_dir / project_name / "train.py").write_text("half")
        raise TemplateError("template error in train.py:3: boom")

    monkeypatch.setattr(render, "render_project", fail_halfway)
    assert_one_line_error(tricks("new", tmp_path / "exp"), 1, "boom")
    assert list(tmp_path.iterdir()) == []  # neither the project nor the staging folder


def test_an_interrupted_render_leaves_nothing_behind(tmp_path, monkeypatch):
    def interrupted(options, project_name, output_dir):
        (output_dir / project_name).mkdir()
        raise KeyboardInterrupt

    monkeypatch.setattr(render, "render_project", interrupted)
    result = tricks("new", tmp_path / "exp")
    assert result.exit_code == 130
    assert list(tmp_path.iterdir()) == []
