"""tricks add / remove / update / diff on a project the user has edited: a three-way merge (git merge-file)
against the pristine render kept in .tricks/base. Clean merges equal `tricks new` plus the same edits;
conflicts change nothing (or write markers, the answers file and the base moving to the new render at once);
a kill leaves the project as it was or as it should be. test_change_edits.py: ordinary edits and odd files."""

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from generator import change as change_module
from generator.change import ANSWERS, BASE, GENERATED, STAGING, change, diff
from generator.errors import UsageError
from generator.options import Options, Task
from generator.render import generate
from generator.tricks import TRICKS
from tests.goldens import TINY_LM
from tests.helpers import run_script
from tests.images import TINY_IMAGES, make_images

HELPER = '''def count_parameters(model):
    """My helper."""
    return sum(p.numel() for p in model.parameters())


'''


def edit(text: str, task: str) -> str:
    """The standard user edits: other data and model, two defaults, an import and a helper, the epoch line."""
    if task == "classify":
        edits = [
            ('"""Toy data made here, the same in every run', '"""My own data, the same in every run'),
            ("nn.Linear(2, 64),", "nn.Linear(2, 128),"),
            ("nn.Linear(64, 64),", "nn.Linear(128, 64),"),
            ('default=20, help="passes over the data"', 'default=30, help="passes over the data"'),
            ('default=3e-3, help="peak learning rate"', 'default=1e-3, help="peak learning rate"'),
        ]
    elif task == "gan":
        edits = [
            ('"""n points of the toy distribution', '"""n points of my distribution'),
            ("nn.ReLU(),", "nn.LeakyReLU(0.2),"),
            ('default=15, help="epochs to train"', 'default=25, help="epochs to train"'),
            ('default=3e-3, help="peak learning rate"', 'default=1e-3, help="peak learning rate"'),
        ]
    elif task == "image":
        edits = [
            ('"""The training and validation loaders of --data', '"""My loaders of --data'),
            (
                "self.head = nn.Linear(channels, num_classes)",
                "self.head = nn.Linear(channels, num_classes, bias=False)",
            ),
            ('default=15, help="passes over the data"', 'default=30, help="passes over the data"'),
            ('default=3e-3, help="peak learning rate"', 'default=1e-3, help="peak learning rate"'),
        ]
    else:
        edits = [
            ('"""The text as token ids, one per character', '"""My text as token ids, one per character'),
            ("nn.GELU(),", "nn.ReLU(),"),
            ('default=10, help="epochs to train"', 'default=20, help="epochs to train"'),
            ('default=1e-3, help="peak learning rate"', 'default=3e-3, help="peak learning rate"'),
        ]
    edits += [
        ("\nimport io\n", "\nimport io\nimport itertools\n"),
        ("# -----------------------------------------------------------------------------\n# training\n",
         HELPER + "# -----------------------------------------------------------------------------\n# training\n"),
        ("            summary = f", "            summary = f\"my \" f"),
    ]  # fmt: skip
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    return text


def project_with(tmp_path: Path, name: str, task: str, tricks: list[str], edited: bool = True) -> Path:
    dest = tmp_path / name
    generate(Options.create(task, **dict.fromkeys(tricks, True)), dest)
    if edited:
        (dest / "train.py").write_text(edit((dest / "train.py").read_text(), task))
    return dest


def hashes(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.relative_to(folder) != Path(".tricks/lock")  # made by the first command
    }


PAIRS = [(task.value, trick.name) for task in Task for trick in TRICKS if task in trick.tasks]


def test_every_trick_merges_into_an_edited_project_as_if_rendered_with_it(tmp_path):
    """For each (task, trick): add it to an edited render without it. A clean merge equals tricks new with the
    trick plus the same edits, and remove gives back the edited project byte for byte; a conflict changes
    nothing. The clean share is the figure the closing note reports."""
    clean = []
    for task, trick in PAIRS:
        base = ["gp"] if task == "gan" and trick != "gp" else []  # the gan projects are WGAN-GP ones
        project = project_with(tmp_path, f"{task}-{trick}", task, base)
        before = hashes(project)
        merged = change(project, add=[trick])
        if any(m.conflicts for m in merged):
            assert hashes(project) == before, f"{task} {trick}: a conflict changed files"
            continue
        clean.append((task, trick))
        expected = project_with(tmp_path / "expected", f"{task}-{trick}", task, [*base, trick])  # the same name
        for file in (*GENERATED, ANSWERS):
            assert (project / file).exists() == (expected / file).exists(), f"{task} {trick}: {file}"
            if (expected / file).exists():  # slurm.sbatch comes with ddp only
                assert (project / file).read_text() == (expected / file).read_text(), f"{task} {trick}: {file}"
        change(project, remove=[trick])
        assert {k: v for k, v in hashes(project).items() if not k.startswith(".tricks")} == {
            k: v for k, v in before.items() if not k.startswith(".tricks")
        }, f"{task} {trick}: remove after add"
    print(f"\n{len(clean)} of {len(PAIRS)} (task, trick) pairs merge cleanly with the standard edits")
    assert len(clean) == len(PAIRS), f"only these merge cleanly: {clean}"


# the image task's --compile run costs 25 s of compiling convolutions; the merged text equals the render with the
# trick (test_every_trick_merges_...), whose run test_pairs checks
TRAINED = [pair for pair in PAIRS if pair != ("image", "compile")]


@pytest.mark.parametrize(("task", "trick"), TRAINED)
def test_the_merged_project_trains(tmp_path, task, trick):
    base = ["gp"] if task == "gan" and trick != "gp" else []
    project = project_with(tmp_path, "p", task, base)
    change(project, add=[trick])
    steps = {
        "gan": ["--steps-per-epoch", 5, "--n-critic", 2],
        "lm": [*TINY_LM, "--steps-per-epoch", 5],
        "image": [*TINY_IMAGES, "--data", make_images(tmp_path / "images", per_class=4, val=1)],
    }.get(task, [])
    result = run_script(project, "--epochs", 1, *steps, "--out-dir", project / "runs" / "one")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "count_parameters" in (project / "train.py").read_text()


def test_an_edit_on_a_line_the_trick_changes_is_a_conflict_and_nothing_changes(tmp_path):
    project = project_with(tmp_path, "p", "classify", ["seed"])
    text = (project / "train.py").read_text()
    (project / "train.py").write_text(
        text.replace("            loss.backward()\n", "            loss.backward()  # mine\n")
    )
    before = hashes(project)
    merged = change(project, add=["amp"])
    [conflict] = [line for m in merged for line in m.conflicts]
    assert re.match(
        r"train\.py:\d+-\d+: yours '.*loss.backward\(\)  # mine'; the new render's '.*scaler.scale", conflict
    )
    assert hashes(project) == before, "no file changed"
    change(project, add=["amp"], markers=True)
    assert "<<<<<<< train.py (yours)" in (project / "train.py").read_text()
    assert "amp: true" in (project / ANSWERS).read_text(), "the answers file records the change at once"
    assert "scaler.scale" in (project / BASE / "train.py").read_text(), "and the merge base is the new render"
    with pytest.raises(UsageError, match="hold conflict markers"):
        change(project, add=["clip"])


def test_refusals_in_one_line(tmp_path):
    project = project_with(tmp_path, "p", "classify", ["seed"])
    with pytest.raises(UsageError, match="seed is already on"):
        change(project, add=["seed"])
    with pytest.raises(UsageError, match="amp is not on"):
        change(project, remove=["amp"])
    with pytest.raises(UsageError, match="gp does not apply to a classify project"):
        change(project, add=["gp"])
    with pytest.raises(UsageError, match="no trick named 'warp'"):
        change(project, add=["warp"])
    with pytest.raises(UsageError, match="is not a tricks project"):
        change(tmp_path, add=["amp"])


def test_update_keeps_the_edits_and_takes_a_template_change(tmp_path, monkeypatch):
    project = project_with(tmp_path, "p", "classify", ["seed"])
    template = tmp_path / "template"
    shutil.copytree(change_module.render_project.__globals__["template_dir"](), template)
    skeleton = template / "templates" / "classify" / "train.py.j2"
    banner = "# data, model and loss: replace these with your own"
    text = skeleton.read_text().replace(banner, "# data and model: yours")
    skeleton.write_text(text)
    arguments = template / "templates" / "args.j2"
    old = '{{ arg("--num-workers", '
    arguments.write_text(
        arguments.read_text().replace(old, '{{ arg("--note", default=\'""\', help="a note") }}{##}\n' + old)
    )
    monkeypatch.setattr("generator.render.template_dir", lambda: template)
    merged = change(project, update=True)
    assert [m.status for m in merged if m.name == "train.py"] == ["updated"]
    text = (project / "train.py").read_text()
    assert "# data and model: yours" in text and '"--note"' in text, "the template's change"
    assert "count_parameters" in text and "nn.Linear(2, 128)" in text, "the user's edits"


def test_diff_shows_the_users_edits(tmp_path):
    project = project_with(tmp_path, "p", "classify", ["seed"])
    shown = diff(project)
    assert "+        nn.Linear(2, 128),\n" in shown and "-        nn.Linear(2, 64),\n" in shown
    assert diff(project_with(tmp_path, "q", "classify", ["seed"], edited=False)) == ""


def test_a_kill_leaves_the_project_as_it_was_or_as_it_should_be(tmp_path, monkeypatch):
    project = project_with(tmp_path, "p", "classify", ["seed"])
    before = hashes(project)
    expected = tmp_path / "expected"
    shutil.copytree(project, expected)
    change(expected, add=["amp"])

    writes = []
    real_write = change_module.write_synced

    def killed_before_complete(path, data):
        if path.name == "COMPLETE":
            raise KeyboardInterrupt  # killed while staging
        writes.append(path)
        real_write(path, data)

    monkeypatch.setattr(change_module, "write_synced", killed_before_complete)
    with pytest.raises(KeyboardInterrupt):
        change(project, add=["amp"])
    monkeypatch.undo()
    assert {k: v for k, v in hashes(project).items() if ".tricks/staging" not in k} == before, "as it was"

    real_replace, moved = os.replace, []

    def killed_while_moving(source, target):
        if moved:
            raise KeyboardInterrupt  # killed after the first file moved in
        moved.append(target)
        real_replace(source, target)

    monkeypatch.setattr(change_module.os, "replace", killed_while_moving)
    with pytest.raises(KeyboardInterrupt):
        change(project, add=["amp"])
    monkeypatch.undo()
    assert (project / STAGING / "COMPLETE").exists()
    change_module.open_project(project)  # any next command finishes the moves first
    assert not (project / STAGING).exists()
    assert {k: v for k, v in hashes(project).items()} == hashes(expected), "as it should be"
    assert (project / BASE / "train.py").read_text() == (expected / BASE / "train.py").read_text()


def test_the_commands_print_a_line_per_file_and_exit_as_documented(tmp_path):
    project = project_with(tmp_path, "p", "classify", ["seed"])
    tricks = [str(Path(sys.executable).parent / "tricks")]
    added = subprocess.run([*tricks, "add", "--amp", "ema"], cwd=project, capture_output=True, text=True, check=False)
    assert added.returncode == 0 and added.stderr == ""
    assert added.stdout.splitlines()[:2] == ["updated   train.py", "updated   README.md"]
    assert "unchanged requirements.txt" in added.stdout.splitlines()
    refused = subprocess.run([*tricks, "add", "amp"], cwd=project, capture_output=True, text=True, check=False)
    assert (refused.returncode, refused.stderr) == (2, "error: amp is already on\n")
    text = (project / "train.py").read_text()
    assert "update_ema(ema, model, args.ema_decay)\n" in text
    (project / "train.py").write_text(
        text.replace("update_ema(ema, model, args.ema_decay)\n", "update_ema(ema, model, 0.9)\n")
    )
    clash = subprocess.run(
        [*tricks, "remove", "ema", "--project", project], capture_output=True, text=True, check=False
    )
    assert clash.returncode == 1 and clash.stdout == ""
    assert clash.stderr.splitlines()[0].startswith("conflict: train.py:")
    assert clash.stderr.splitlines()[-1].startswith("error: 1 conflict(s) with your edits; nothing was changed")
