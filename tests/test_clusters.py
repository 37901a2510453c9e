"""How clusters stop and restart runs (issue 18): SIGTERM and SIGUSR1 save and stop like Ctrl-C; --resume auto
is one command for the first start and every restart; torchrun's processes agree on the stop wherever the
signal lands; two "nodes" on one machine; and the generated slurm.sbatch, run under a fake SLURM. Every
process is ended by its id, and everything listens on 127.0.0.1 only."""

import os
import random
import signal
import socket
import stat
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest
import torch

from generator.change import change
from tests.faults import SIX, start, wait_for_rows
from tests.goldens import TINY_LM
from tests.helpers import (
    checkpoint,
    load,
    max_difference,
    metrics,
    render,
    run_main,
    run_script,
    same_tensors,
    scratch_env,
)
from tests.test_ddp import ok

pytestmark = pytest.mark.slow  # training scripts in processes of their own

ARGS = ["--epochs", 40, "--seed", 21]  # long enough that a signal after the first rows lands mid-run
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


@pytest.fixture(scope="module")
def projects(tmp_path_factory):
    root = tmp_path_factory.mktemp("clusters")
    return {
        "seed": render(root / "seed", "classify", seed=True),
        "ddp": render(root / "ddp", "classify", ddp=True, seed=True),
    }


@pytest.fixture(scope="module")
def uninterrupted(projects, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    run_script(projects["seed"], *ARGS, "--out-dir", out / "one", check=True)
    whole = launch(projects["ddp"], [*ARGS, "--batch-size", 25, "--out-dir", out / "ddp"])
    _, stderr = end(whole)
    assert whole.returncode == 0, stderr[-3000:]
    return {"one": out / "one", "ddp": out / "ddp"}


def same_run(out: Path, reference: Path):
    """Each epoch's row exactly once, and the uninterrupted run's weights bit for bit."""
    assert metrics(out) == metrics(reference)
    assert max_difference(checkpoint(out / "last.pt")["model"], checkpoint(reference / "last.pt")["model"]) == 0


@pytest.mark.parametrize(
    ("signum", "code", "rows"), [(signal.SIGTERM, 143, 1), (signal.SIGUSR1, 138, 1), (signal.SIGTERM, 143, 3)]
)
def test_a_signal_saves_and_stops_and_resume_auto_continues(tmp_path, projects, uninterrupted, signum, code, rows):
    """The same command starts the run and, after the signal, continues it; the signal lands after `rows` rows."""
    out = tmp_path / "run"
    command = [*ARGS, "--out-dir", out, "--resume", "auto"]
    process = start(projects["seed"], *command)
    wait_for_rows(out, rows, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == code, stderr
    assert f"{signal.Signals(signum).name}: stopping after this step" in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].split()[-1] == "--resume", "the resume command drops auto"
    assert "auto" not in stderr.strip().splitlines()[-1].split()
    ok(run_script(projects["seed"], *command))
    same_run(out, uninterrupted["one"])


def test_resume_auto_starts_a_folder_that_saved_nothing_and_needs_an_out_dir(tmp_path, projects, capsys):
    module = load(projects["seed"] / "train.py")
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text("{}")  # a start killed before its first epoch ended
    run_main(module, ["--epochs", 2, "--out-dir", out, "--resume", "auto"])
    assert [row["epoch"] for row in metrics(out)] == ["1", "2"]
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--epochs", 2, "--resume", "auto"])
    assert exit_info.value.code == 2 and "--resume auto needs --out-dir" in capsys.readouterr().err


def test_resume_auto_never_starts_over_a_run_whose_last_pt_is_damaged(tmp_path, projects, capsys):
    module = load(projects["seed"] / "train.py")
    out = tmp_path / "run"
    run_main(module, ["--epochs", 3, "--out-dir", out])
    (out / "last.pt").write_bytes(b"half a checkpoint")
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--epochs", 3, "--out-dir", out, "--resume", "auto"])
    assert exit_info.value.code == 1 and "last.pt.prev (epoch 2) over it" in capsys.readouterr().err
    assert checkpoint(out / "last.pt.prev")["epoch"] == 2, "kept"


# -----------------------------------------------------------------------------
# a stop within an epoch


def stop_at_step(module, monkeypatch, step):
    """A signal during the run's optimizer step `step` (counted from its start): the script finishes the step,
    saves the run there and exits with 130. show_losses runs once per optimizer step, just before pause()."""
    show_losses, steps = module.show_losses, []

    def show_then_stop(*args, **kwargs):
        show_losses(*args, **kwargs)
        steps.append(step)
        if len(steps) == step:
            signal.raise_signal(signal.SIGINT)  # the run's handler: stop after this step

    monkeypatch.setattr(module, "show_losses", show_then_stop)


CASES = {
    # task, tricks, options, the steps to stop at: one mid-epoch in epoch 1, an epoch's last step, one in a later epoch
    # a classifier without a seed: its loader shuffles with torch's generator, which the save must hold too (32 steps)
    "classify": ("classify", {}, ["--epochs", 3], (2, 32, 40)),
    "classify-six": ("classify", SIX, ["--epochs", 3, "--seed", 5, "--patience", 100], (2, 8, 13)),  # 8 steps
    "gan": ("gan", {"gp": True, "seed": True, "accumulate": True, "clip": True, "amp": True},
            ["--epochs", 3, "--steps-per-epoch", 6, "--n-critic", 2, "--accumulate-steps", 2], (2, 6, 13)),
    "lm": ("lm", {"seed": True, "accumulate": True, "clip": True, "ema": True},
           [*TINY_LM, "--epochs", 3, "--steps-per-epoch", 6, "--accumulate-steps", 2], (2, 6, 13)),
}  # fmt: skip


@pytest.mark.parametrize(("case", "step"), [(case, step) for case, (*_, steps) in CASES.items() for step in steps])
def test_a_stop_mid_epoch_saves_that_step_and_resumes_bit_identical(
    tmp_path, rendered, monkeypatch, capsys, case, step
):
    """Stopped after an optimizer step of the run (mid-epoch, or an epoch's last), then resumed: the rows and
    the weights of the uninterrupted run, bit for bit."""
    task, tricks, args, _ = CASES[case]
    module = rendered(task, **tricks)
    torch.manual_seed(0)
    whole = run_main(module, [*args, "--out-dir", tmp_path / "whole"])
    torch.manual_seed(0)
    with monkeypatch.context() as patch:
        stop_at_step(module, patch, step)
        with pytest.raises(SystemExit) as exit_info:
            run_main(module, [*args, "--out-dir", tmp_path / "cut"])
    assert exit_info.value.code == 130
    saved = checkpoint(tmp_path / "cut" / "last.pt")
    assert f"holds {module.run_progress(saved['epoch'], saved['position']['done'] if saved['position'] else 0)}" in (
        capsys.readouterr().err
    )
    rows = metrics(tmp_path / "cut") if (tmp_path / "cut" / "metrics.csv").exists() else []
    assert len(rows) == saved["epoch"], "rows of whole epochs only"
    resumed = run_main(module, [*args, "--out-dir", tmp_path / "cut", "--resume"])
    assert metrics(tmp_path / "cut") == metrics(tmp_path / "whole")
    as_tuple = lambda models: models if isinstance(models, tuple) else (models,)  # noqa: E731
    for a, b in zip(as_tuple(whole), as_tuple(resumed), strict=True):
        assert same_tensors(a.state_dict(), b.state_dict())


def test_save_every_steps_saves_mid_epoch_and_a_kill_resumes_from_there(tmp_path, projects, uninterrupted):
    """kill -9 (no chance to save) once a save mid-epoch is on disk: --save-every-steps 3 saved at a multiple
    of 3 steps within the epoch, and the resume continues from that batch to the uninterrupted run; the option
    may change on resume, since it changes nothing computed. (A no-op option would leave no save mid-epoch.)"""
    out = tmp_path / "run"
    process = start(projects["seed"], *ARGS, "--out-dir", out, "--save-every-steps", 3)
    try:
        saved = wait_for_a_save_mid_epoch(out, process, after_epoch=1)
    finally:
        process.kill()
        process.communicate()
    assert saved["scheduler"]["last_epoch"] % 3 == 0, "saved at a multiple of --save-every-steps"
    resumed = ok(run_script(projects["seed"], *ARGS, "--out-dir", out, "--resume", "--save-every-steps", 5))
    epoch, done = saved["epoch"], saved["position"]["done"]
    assert f"resuming {out} after epoch {epoch} and {done} batches of epoch {epoch + 1}" in resumed.stdout
    same_run(out, uninterrupted["one"])


def wait_for_a_save_mid_epoch(out: Path, process, after_epoch: int, timeout: float = 180) -> dict:
    """Poll last.pt (replaced atomically: a read sees a whole file) until it holds a save within an epoch
    after `after_epoch`; then stop the process (SIGSTOP) and read last.pt again, since a later save may have
    replaced it meanwhile: returns the save that stays on disk, the process stopped (to be killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before a save mid-epoch"
        if (out / "last.pt").exists() and saved_mid_epoch(checkpoint(out / "last.pt"), after_epoch):
            process.send_signal(signal.SIGSTOP)
            saved = checkpoint(out / "last.pt")
            if saved_mid_epoch(saved, after_epoch):
                return saved
            process.send_signal(signal.SIGCONT)  # an epoch's end was saved in between: look again
        time.sleep(0.01)
    raise AssertionError("no save mid-epoch in time")


def saved_mid_epoch(saved: dict, after_epoch: int) -> bool:
    return saved["epoch"] >= after_epoch and saved["position"] is not None


# -----------------------------------------------------------------------------
# torchrun


def children(pid: int) -> list[int]:
    return [
        int(child) for task in Path(f"/proc/{pid}/task").iterdir() for child in (task / "children").read_text().split()
    ]


def rank_pids(launcher: int) -> dict[int, int]:
    """The training processes torchrun started: rank to process id."""
    ranks = {}
    for child in children(launcher):
        environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        rank = [entry.split(b"=", 1)[1] for entry in environ if entry.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0])] = child
    return ranks


def free_port() -> int:
    """A port for a rendezvous both launchers must be told, free now and kept free until torchrun binds it: below
    the kernel's ephemeral range, from which bind(("", 0)), connect() and torchrun --standalone take theirs (a port
    bound and released at 0 could be handed to any of them before torchrun binds it), and in a block of 500 of its
    own for each pytest-xdist worker, so that two tests never choose the same one."""
    ephemeral = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    worker = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
    block = range(ephemeral - 500 * (worker + 1), ephemeral - 500 * worker)
    for port in random.Random().sample(block, len(block)):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port in {block}")


def launch(project: Path, args: list, nproc=2, nodes=None) -> subprocess.Popen:
    """torchrun in a session of its own (so that its whole process group can be signalled)."""
    where = ["--standalone"] if nodes is None else nodes
    return subprocess.Popen(
        [*TORCHRUN, *where, "--nproc-per-node", str(nproc), "train.py", *map(str, args)],
        cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=scratch_env(project), start_new_session=True,
    )  # fmt: skip


def end(process: subprocess.Popen, timeout=180) -> tuple[str, str]:
    try:
        return process.communicate(timeout=timeout)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)


@pytest.mark.parametrize("target", ["rank 1", "process group"])
def test_under_torchrun_a_signal_to_one_rank_or_to_all_stops_every_rank_at_one_epoch(
    tmp_path, projects, uninterrupted, target
):
    """2 processes x 25, against the same run uninterrupted. Signalled alone, rank 1 stops every rank at the
    same step (they agree on it); the whole group gets it twice (from the signal and from torchrun passing it
    on), which counts once. Either way the same command resumes to the uninterrupted run's weights, bit for
    bit, and each epoch's row once."""
    out = tmp_path / "run"
    command = [*ARGS, "--batch-size", 25, "--out-dir", out, "--resume", "auto"]
    process = launch(projects["ddp"], command)
    wait_for_rows(out, 1, process)
    if target == "rank 1":
        os.kill(rank_pids(process.pid)[1], signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGTERM)
    _, stderr = end(process)
    saved = checkpoint(out / "last.pt")["epoch"]
    assert saved == len(metrics(out)) < 40, stderr[-2000:]
    last = checkpoint(out / "last.pt")
    where = load(projects["ddp"] / "train.py").run_progress(saved, last["position"]["done"] if last["position"] else 0)
    assert f"holds {where}. Resume with:" in stderr and 'train.py", line' not in stderr, "no traceback of ours"
    finished = launch(projects["ddp"], command)
    _, stderr = end(finished)
    assert finished.returncode == 0, stderr[-3000:]
    same_run(out, uninterrupted["ddp"])


def test_two_nodes_on_one_machine_equal_one_process_with_twice_the_batch(tmp_path, projects):
    """Two torchrun launchers, one process each, meeting at a c10d rendezvous on 127.0.0.1, as two machines
    of a cluster do."""
    port, common = free_port(), ["--epochs", 2, "--seed", 9, "--warmup-steps", 5]
    rendezvous = ["--nnodes", "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{port}"]
    two = [*common, "--batch-size", 25, "--out-dir", tmp_path / "two"]
    nodes = [launch(projects["ddp"], two, nproc=1, nodes=[*rendezvous, "--node-rank", str(rank)]) for rank in (0, 1)]
    for node in nodes:
        _, stderr = end(node)
        assert node.returncode == 0, stderr[-3000:]
    ok(run_script(projects["ddp"], *common, "--batch-size", 50, "--out-dir", tmp_path / "one"))
    two, one = checkpoint(tmp_path / "two" / "last.pt"), checkpoint(tmp_path / "one" / "last.pt")
    assert len(two["rng"]) == 2, "two processes"
    assert max_difference(two["model"], one["model"]) < 1e-5


# -----------------------------------------------------------------------------
# slurm.sbatch


def test_slurm_sbatch_comes_with_ddp_and_passes_bash_n_and_shellcheck(tmp_path, projects):
    script = projects["ddp"] / "slurm.sbatch"
    assert not (projects["seed"] / "slurm.sbatch").exists(), "only with --ddp"
    text = script.read_text()
    for line in ["#SBATCH --signal=B:TERM@", "#SBATCH --requeue", "--rdzv-backend c10d", "--resume auto",
                 '--nnodes "$SLURM_NNODES"', 'runs/slurm-$SLURM_JOB_ID']:  # fmt: skip
        assert line in text, line
    assert subprocess.run(["bash", "-n", script], check=False).returncode == 0
    shellcheck = Path(sys.executable).parent / "shellcheck"
    result = subprocess.run([shellcheck, script], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout


def fake_slurm(tmp_path: Path) -> dict[str, str]:
    """SLURM's variables for a one-node job of 2 processes, and stub scontrol and srun on the PATH: srun runs
    its command as the node's one task; scontrol names the node and records a requeue."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    (stubs / "srun").write_text('#!/bin/bash\nexec "$@"\n')
    (stubs / "scontrol").write_text(
        '#!/bin/bash\nif [ "$1 $2" = "show hostnames" ]; then echo 127.0.0.1; else echo "$*" >> "$SCONTROL_LOG"; fi\n'
    )
    for stub in stubs.iterdir():
        stub.chmod(stub.stat().st_mode | stat.S_IXUSR)
    path = f"{stubs}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    return {
        "PATH": path, "SLURM_JOB_ID": "4242", "SLURM_NNODES": "1", "SLURM_JOB_NODELIST": "node001",
        "SLURM_GPUS_ON_NODE": "2", "RDZV_PORT": str(free_port()), "SCONTROL_LOG": str(tmp_path / "scontrol.log"),
    }  # fmt: skip


def test_slurm_sbatch_trains_and_after_sigterm_requeues_and_resumes(tmp_path, projects):
    """bash slurm.sbatch as SLURM runs it on one node; SIGTERM to the script alone (--signal=B:TERM): the run
    saves and stops without a traceback, the script requeues the job; the job's second start resumes the run to
    its end."""
    project = tmp_path / "project"
    render(project, "classify", ddp=True, seed=True)
    env = {**scratch_env(project), **fake_slurm(tmp_path), "PYTHONUNBUFFERED": "1"}
    out = project / "runs" / "slurm-4242"
    job = subprocess.Popen(["bash", "slurm.sbatch", *map(str, ARGS)], cwd=project, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, start_new_session=True)  # fmt: skip
    wait_for_rows(out, 1, job, timeout=180)
    job.send_signal(signal.SIGTERM)  # the batch script alone, as --signal=B:TERM does
    _, stderr = end(job)
    saved = checkpoint(out / "last.pt")["epoch"]
    assert saved == len(metrics(out)) < 40, stderr[-3000:]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"]
    # the ranks stop and exit 0, torchrun as after a success: no traceback of its own, no resume command to type
    assert "Traceback" not in stderr and "SignalException" not in stderr, stderr[-3000:]
    assert "the requeued job resumes there" in stderr and "Resume with" not in stderr
    again = subprocess.run(["bash", "slurm.sbatch", *map(str, ARGS)], cwd=project, env=env, capture_output=True,
                           text=True, timeout=300, check=False)  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"resuming {out.relative_to(project)} after epoch {saved}" in again.stdout
    assert [row["epoch"] for row in metrics(out)] == [str(epoch) for epoch in range(1, 41)]
    assert (tmp_path / "scontrol.log").read_text().split() == ["requeue", "4242"], "no second requeue"


def test_tricks_add_and_remove_ddp_write_and_delete_slurm_sbatch(tmp_path):
    project = render(tmp_path / "p", "classify", seed=True)
    [added] = [m for m in change(project, add=["ddp"]) if m.name == "slurm.sbatch"]
    assert added.status == "added" and (project / "slurm.sbatch").read_text().startswith("#!/bin/bash")
    [removed] = [m for m in change(project, remove=["ddp"]) if m.name == "slurm.sbatch"]
    assert removed.status == "removed" and not (project / "slurm.sbatch").exists()
    assert not (project / ".tricks" / "base" / "slurm.sbatch").exists()
    change(project, add=["ddp"])
    (project / "slurm.sbatch").write_text((project / "slurm.sbatch").read_text() + "# my partition\n")
    merged = change(project, remove=["ddp"])
    assert [m.status for m in merged if m.name == "slurm.sbatch"] == ["conflict"]
    assert (project / "slurm.sbatch").read_text().endswith("# my partition\n"), "your edits stay"
    assert "DistributedDataParallel" in (project / "train.py").read_text(), "a conflict changes nothing"


def test_a_signal_delivered_twice_within_a_second_counts_once(projects, monkeypatch):
    """A process group's signal reaches a rank twice: directly, and passed on by torchrun or srun. Only a
    signal a second or more after the first is a second request, which stops at once."""
    module = load(projects["seed"] / "train.py")
    stop = module.Stop()
    stop.request(signal.SIGTERM, None)
    stop.request(signal.SIGTERM, None)  # the same request, again
    assert stop.signal == signal.SIGTERM
    stop.at -= 1.0
    with pytest.raises(KeyboardInterrupt) as second:
        stop.request(signal.SIGINT, None)
    assert module.signal_of(second.value) == signal.SIGTERM, "the run exits as the first signal asked"


def test_a_saved_tally_goes_on_on_the_device_of_the_resumed_run(projects):
    """last.pt loads on the CPU; a run resumed on a GPU must stack the saved losses with its new ones."""
    module = load(projects["seed"] / "train.py")
    tally = [{"losses": [torch.ones(())], "skipped": 0, "history": defaultdict(list, {"a": [torch.zeros(2)]})}]
    moved = module.on_device(tally, torch.device("meta"))
    assert moved is tally and isinstance(tally[0]["history"], defaultdict)
    assert tally[0]["losses"][0].is_meta and tally[0]["history"]["a"][0].is_meta and tally[0]["skipped"] == 0
