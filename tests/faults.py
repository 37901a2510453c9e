"""What the fault tests share: the projects they run, starting a script in a process of its own, the
run they compare a resumed one with."""

import hashlib
import os
import subprocess
import sys
import time

from tests.helpers import metrics

SIX = {"seed": True, "amp": True, "clip": True, "accumulate": True, "lr_plot": True, "early_stop": True}


def hashes(folder):
    """Every file under folder (.tricks/base's too) and a hash of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def start(project, *args, env=None):
    """`python train.py ARGS` in a process of its own; env: variables to set for it, beside os.environ's."""
    return subprocess.Popen(
        [sys.executable, "train.py", *map(str, args)],
        cwd=project,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def wait_for_rows(out_dir, rows, process, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if (out_dir / "metrics.csv").exists() and len(metrics(out_dir)) >= rows:
            return
        assert process.poll() is None, process.communicate()
        time.sleep(0.05)
    raise TimeoutError


# long enough that a signal sent after the first rows always lands mid-run, however busy the machine
# (at 12 epochs, a loaded machine once let the run end before the signal arrived)
EPOCHS = 40


ARGS = ["--epochs", EPOCHS, "--seed", 21, "--patience", 100]


def one_line(err: str) -> str:
    """The last line of stderr, asserting that the output holds no traceback."""
    assert "Traceback" not in err, err
    return err.strip().splitlines()[-1]


def without_lock(folder):
    return {name: digest for name, digest in hashes(folder).items() if name != ".lock"}
