"""The hook table (generator/hooks.py) against the templates: each a failure that names the file."""

import shutil

import pytest

from generator import hooks
from tests.helpers import ROOT

TEMPLATE = ROOT / "templates" / "train"


def test_the_templates_agree_with_the_hook_table():
    assert hooks.check(TEMPLATE) == []


def test_the_docs_tables_are_written_from_the_hook_table():
    doc = hooks.DOC.read_text()
    assert hooks.START in doc and hooks.END in doc
    assert hooks.with_tables(doc) == doc, "run: python -m generator.hooks --write"


MUTATIONS = {
    "a misspelled macro": ("tricks/ema.j2", "macro after_step(", "macro after_stpe(",
                           "tricks/ema.j2: macro after_stpe() fills no hook point"),
    "an argument not offered": ("tricks/ema.j2", "after_step(model, raw)", "after_step(model, raw, optimizer)",
                                "tricks/ema.j2: macro after_step() takes optimizer"),
    "a hook no skeleton names": ("base.py.j2", '{{ slot("stop_check", 12) }}{##}', "",
                                 "no skeleton names the hook point 'stop_check'"),
    "a hook point not in the table": ("base.py.j2", 'slot("stop_check", 12)', 'slot("stop_chek", 12)',
                                      "base.py.j2: slot('stop_chek') names no hook point"),
    "an offer not in the table": ("classify/train.py.j2", 'slot("wrap_model", 4, model="model")',
                                  'slot("wrap_model", 4, model="model", device="device")',
                                  "classify/train.py.j2: slot('wrap_model') offers device="),
    "a hook named by a skeleton the table leaves out": ("gan/train.py.j2", "{% block checks %}",
                                                        '{% block checks %}\n{{ slot("share") }}',
                                                        "'share' is named by ['classify', 'gan', 'image']"),
    "a misspelled block": ("lm/train.py.j2", "{% block summary %}", "{% block sumary %}",
                           "lm/train.py.j2: fills block sumary, which base.py.j2 does not have"),
    "an unlisted flag read": ("tricks/clip.j2", "{% macro tally() %}", "{% macro tally() %}{{ cookiecutter.ema }}",
                              "tricks/clip.j2: reads --ema's choice"),
}  # fmt: skip


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_a_broken_contract_is_a_failure_naming_its_file(tmp_path, mutation):
    file, old, new, problem = MUTATIONS[mutation]
    copy = tmp_path / "train"
    shutil.copytree(TEMPLATE, copy)
    path = copy / "templates" / file
    assert old in path.read_text()
    path.write_text(path.read_text().replace(old, new, 1))
    problems = hooks.check(copy)
    assert any(problem in line for line in problems), problems


def test_a_flag_read_the_table_lists_but_the_templates_dropped_is_a_failure(monkeypatch):
    monkeypatch.setitem(hooks.FLAG_READS, ("tricks/ema.j2", "seed"), "a stale entry")
    assert "generator/hooks.py: FLAG_READS lists tricks/ema.j2 reading seed, which it no longer does" in hooks.check(
        TEMPLATE
    )
