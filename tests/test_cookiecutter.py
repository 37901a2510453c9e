"""The template is a plain cookiecutter template: `cookiecutter templates/train` renders what
`tricks new` renders, and cookiecutter.json asks exactly the Options' questions."""

import json
import subprocess
import sys
from dataclasses import fields

import pytest

from generator.options import Options, Task
from generator.render import render_project, template_dir
from generator.tricks import TRICKS
from tests.helpers import scratch_env
from tests.test_cli import snapshot


def plain_cookiecutter(out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "cookiecutter", "--no-input", str(template_dir()), "-o", str(out), *extra],
        capture_output=True,
        text=True,
        check=False,
        env=scratch_env(out),
    )


def test_cookiecutter_json_holds_the_options_fields_and_defaults():
    data = json.loads((template_dir() / "cookiecutter.json").read_text())
    public = [key for key in data if not key.startswith("_")]
    assert public == ["project_name"] + [f.name for f in fields(Options)]
    assert data["task"] == [task.value for task in Task]
    for f in fields(Options):
        if f.name != "task":
            assert data[f.name] is f.default
    for trick in TRICKS:
        assert data["__prompts__"][trick.name].startswith(trick.flag.removeprefix("--") + ":")
    # the tricks that apply to some tasks only, for the hook that refuses them elsewhere
    some_tasks = {trick.name: [task.value for task in trick.tasks] for trick in TRICKS if len(trick.tasks) < len(Task)}
    assert data["_tasks"] == some_tasks


@pytest.mark.parametrize(
    ("extra", "options"),
    [
        ((), Options.create()),
        (("task=gan", "gp=yes", "amp=yes", "early_stop=yes"), Options.create(gp=True, amp=True, early_stop=True)),
        (("seed=yes", "accumulate=yes", "ddp=yes"), Options.create(seed=True, accumulate=True, ddp=True)),
    ],
)
def test_plain_cookiecutter_renders_what_tricks_renders(tmp_path, extra, options):
    result = plain_cookiecutter(tmp_path / "plain", "project_name=exp", *extra)
    assert result.returncode == 0, result.stderr
    ours = render_project(options, "exp", tmp_path / "ours")
    assert snapshot(tmp_path / "plain" / "exp") == snapshot(ours)


def test_plain_cookiecutter_refuses_gp_without_gan(tmp_path):
    result = plain_cookiecutter(tmp_path, "gp=yes")
    assert result.returncode != 0
    assert "error: gp does not apply to task classify: choose task gan" in result.stderr
    assert list(tmp_path.iterdir()) == []
