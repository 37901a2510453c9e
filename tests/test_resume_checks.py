"""Resume checks what it resumes (other options, another script, an older one), a damaged run folder is a
message, and one run trains in a folder at a time."""

import contextlib
import fcntl
import os
import shutil

import pytest
import torch

from tests.faults import hashes, one_line, start, wait_for_rows, without_lock
from tests.helpers import checkpoint, metrics, run_main, run_script, same_tensors, stop_after


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (["--lr", "0.5"], "--lr 0.003 (now 0.5)"),
        (["--batch-size", "32"], "--batch-size 64 (now 32)"),
        (["--accumulate-steps", "2"], "--accumulate-steps 4 (now 2)"),
        (["--epochs", "6"], "--epochs 4 (now 6)"),  # the schedule's length depends on it
        (["--amp-dtype", "float16"], "--amp-dtype auto (now float16)"),
    ],
)
def test_resume_with_options_that_change_the_run_is_refused(saved_run, modules, capsys, change, named):
    out, args = saved_run
    before = without_lock(out)
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["classify"], [*args, "--out-dir", out, "--resume", *change])
    assert exit_info.value.code == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: {out / 'last.pt'} was trained with ") and named in line
    assert without_lock(out) == before and checkpoint(out / "last.pt")["args"]["lr"] == 0.003


@pytest.mark.parametrize(
    ("other", "this_one"),
    [("no-amp", "classify with seed, accumulate, clip, early-stop"), ("plain", "classify with no tricks")],
)
def test_resume_by_a_script_with_other_tricks_is_refused(saved_run, modules, capsys, other, this_one):
    out, args = saved_run
    before = without_lock(out)
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules[other], [*(args if other != "plain" else ["--epochs", 4]), "--out-dir", out, "--resume"])
    assert exit_info.value.code == 2
    made_by = "classify with seed, accumulate, amp, clip, early-stop"
    assert f"was made by another script ({made_by}), not this one ({this_one})" in one_line(capsys.readouterr().err)
    assert without_lock(out) == before


def test_a_gan_checkpoint_is_refused_by_a_classify_script(tmp_path, modules, capsys):
    out = tmp_path / "gan"
    run_main(modules["gan"], ["--epochs", 1, "--steps-per-epoch", 2, "--out-dir", out])
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["classify"], ["--epochs", 1, "--out-dir", out, "--resume"])
    assert exit_info.value.code == 2
    assert "was made by another script (gan with seed, gp, amp, early-stop)" in one_line(capsys.readouterr().err)


def test_a_checkpoint_of_an_older_script_is_refused(saved_run, modules, tmp_path, capsys):
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    older = checkpoint(out / "last.pt")
    del older["script"]  # scripts before issue 13 did not record it
    torch.save(older, out / "last.pt")
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["classify"], [*saved_run[1], "--out-dir", out, "--resume"])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        f"error: {out / 'last.pt'} was made by an older script, which did not record its tricks; "
        "resume it with that script"
    )


def test_a_trick_that_changes_nothing_and_safe_options_do_not_block_a_resume(saved_run, modules, tmp_path):
    """A run of the script without --lr-plot, resumed by the one with it, on --device cpu with --threads 1:
    it continues exactly."""
    whole, args = saved_run
    out = tmp_path / "run"
    with pytest.MonkeyPatch.context() as patch:
        stop_after(modules["no-plot"], patch, epoch=2)
        with pytest.raises(SystemExit):
            run_main(modules["no-plot"], [*args, "--out-dir", out])
    threads = torch.get_num_threads()
    try:
        run_main(modules["classify"], [*args, "--out-dir", out, "--resume", "--device", "cpu", "--threads", 1])
    finally:
        torch.set_num_threads(threads)
    assert metrics(out) == metrics(whole)
    assert same_tensors(checkpoint(out / "last.pt")["model"], checkpoint(whole / "last.pt")["model"])


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_an_unreadable_last_pt_is_one_line_naming_the_previous_one(saved_run, modules, tmp_path, capsys, damage):
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    data = (out / "last.pt").read_bytes()
    damaged = {"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"\x80\x04junk"}[damage]
    (out / "last.pt").write_bytes(damaged)
    args = saved_run[1]
    with pytest.raises(SystemExit) as exit_info:
        run_main(modules["classify"], [*args, "--out-dir", out, "--resume"])
    assert exit_info.value.code == 1
    line = one_line(capsys.readouterr().err)
    prev = out / "last.pt.prev"
    assert line == (
        f"error: {out / 'last.pt'} is unreadable (damaged, or not a checkpoint); copy {prev} (epoch 3) over it "
        "to resume there"
    )
    shutil.copy(prev, out / "last.pt")  # as the message says: the run resumes from epoch 3 and ends as the whole run
    run_main(modules["classify"], [*args, "--out-dir", out, "--resume"])
    assert metrics(out) == metrics(saved_run[0])


def test_a_deleted_metrics_csv_is_recreated_on_resume(saved_run, modules, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    (out / "last.pt").unlink()
    os.rename(out / "last.pt.prev", out / "last.pt")  # epoch 3 of 4
    (out / "metrics.csv").unlink()
    run_main(modules["classify"], [*saved_run[1], "--out-dir", out, "--resume"])
    assert metrics(out) == metrics(saved_run[0])


def test_a_last_row_cut_short_by_a_kill_is_repaired_on_resume(saved_run, modules, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(saved_run[0], out)
    (out / "last.pt").unlink()
    os.rename(out / "last.pt.prev", out / "last.pt")  # epoch 3 of 4; metrics.csv's epoch-4 row cut in half
    text = (out / "metrics.csv").read_text()
    (out / "metrics.csv").write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])
    run_main(modules["classify"], [*saved_run[1], "--out-dir", out, "--resume"])
    assert metrics(out) == metrics(saved_run[0])


@contextlib.contextmanager
def hold_lock(out):
    """Lock the run folder as another live run would (flock locks belong to an open file, not a process)."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        lock.write("4242\n")
        lock.flush()
        yield


@pytest.mark.parametrize("again", [[], ["--resume"], ["--overwrite"]])
def test_a_folder_in_use_by_another_run_is_refused_untouched(saved_run, modules, tmp_path, capsys, again):
    """[]: a run just begun, nothing saved yet; --resume, --overwrite: a run that is training."""
    out = tmp_path / "run"
    if again:
        shutil.copytree(saved_run[0], out)
    with hold_lock(out):
        before = hashes(out)
        with pytest.raises(SystemExit) as exit_info:
            run_main(modules["classify"], [*saved_run[1], "--out-dir", out, *again])
        assert exit_info.value.code == 2
        assert hashes(out) == before
    assert one_line(capsys.readouterr().err) == (
        f"error: {out} is in use by another run (process 4242); wait for it to end or use another --out-dir"
    )


@pytest.mark.slow  # a training script in a process of its own
def test_a_second_process_is_refused_and_a_killed_run_leaves_no_stale_lock(tmp_path, projects):
    out = tmp_path / "run"
    first = start(projects["plain"], "--epochs", 100000, "--out-dir", out)
    wait_for_rows(out, 1, first)
    second = run_script(projects["plain"], "--epochs", 100000, "--out-dir", out, "--resume")
    assert second.returncode == 2 and f"is in use by another run (process {first.pid})" in one_line(second.stderr)
    first.kill()
    first.communicate()
    with open(out / ".lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # free: the kernel released the killed run's lock
