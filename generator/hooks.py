"""The hook table: every point where a trick's partial meets a task's skeleton, in one place.

A skeleton (templates/train/templates/<task>/train.py.j2, with the base.py.j2, common.j2 and args.j2 it
shares) names a hook point with slot(), expr() or block() (slots.j2); a partial fills it by defining a macro
of the same name. tests/test_hooks.py checks the templates against this table: a macro no hook point has, a
hook point no skeleton names, an argument the hook point does not offer, a skeleton that misses a hook the
table says it has, a block base.py.j2 lacks, another trick's flag read where the table does not list it. The
tables of docs/adding-a-trick.md are written from it (`python -m generator.hooks --write`)."""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

ALL = ("classify", "gan", "lm", "image")


@dataclass(frozen=True)
class Hook:
    name: str
    kind: str  # "slot": lines added; "expr": an expression each trick may rewrite; "block": code each may wrap
    where: str
    offers: tuple[str, ...] = ()  # the keyword arguments the hook point offers a partial's macro
    receives: str = ""  # for an expr, its default text; for a block, what its body is
    defines: str = ""  # what a partial may use and define there (a meeting point: which tricks meet, and how)
    tasks: tuple[str, ...] = ALL  # the skeletons that name it
    section: str = "epoch"


SETUP, EPOCH, RUN, PROJECT = "Options, data, setup", "The epoch", "The run", "The project's files"
HOOKS = (
    # options, data, setup
    Hook("usage", "slot", "the script's docstring, usage lines", section=SETUP),
    Hook(
        "about",
        "block",
        "gan: the docstring's paragraph on the game played",
        receives="the plain GAN's",
        defines="(gp: WGAN-GP's)",
        tasks=("gan",),
        section=SETUP,
    ),
    Hook(
        "stdlib_imports",
        "slot",
        "the standard library's imports",
        ("window_ends",),
        defines="import lines",
        section=SETUP,
    ),
    Hook("imports", "slot", "the other imports", defines="import lines", section=SETUP),
    Hook(
        "args",
        "slot",
        "`parse_args`, a section per trick (the README's options table too)",
        ("arg", "section", "group"),
        defines="`arg(...)` lines under `section(...)`",
        section=SETUP,
    ),
    Hook(
        "helpers",
        "slot",
        "before `train_one_epoch`: the trick's functions and classes",
        ("double_backward",),
        defines="module level",
        section=SETUP,
    ),
    Hook(
        "double_backward",
        "expr",
        "gan: decorator lines for a function whose graph is differentiated twice (gp's `gradient_penalty`)",
        receives='`""`',
        defines="**meeting point** of gp and compile: compile's "
        '`@torch.compiler.set_stance("force_eager")`, since torch.compile has no double backward',
        tasks=("gan",),
        section=SETUP,
    ),
    Hook(
        "eager_sampling",
        "expr",
        "lm: decorator lines for `generate`, which calls the model on a new length for each character",
        receives='`""`',
        defines="(compile: `force_eager`, since compiling every length would take longer than sampling)",
        tasks=("lm",),
        section=SETUP,
    ),
    Hook("device", "expr", "`train`: the device", receives="`pick_device(args.device)`", section=SETUP),
    Hook("seeding", "slot", "`train`, after the device", defines="`args`, `device`", section=SETUP),
    Hook("out_dir", "expr", "`train`: the run folder", receives="`make_out_dir(args)`", section=SETUP),
    Hook(
        "loaders",
        "slot",
        "lm `train`, after `build_data`",
        defines="`val_windows` (may rebind: ddp's share)",
        tasks=("lm",),
        section=SETUP,
    ),
    Hook(
        "data_seed",
        "expr",
        "classify and lm `train`: the seed of the data's order and each sample's random "
        "streams (classify), of the batches' generator (lm)",
        receives="a draw from torch's generator",
        defines="**meeting point** of seed and ddp: `args.seed` (seed); the same on every rank (ddp)",
        tasks=("classify", "lm", "image"),
        section=SETUP,
    ),
    Hook(
        "share",
        "slot",
        "classify `EpochOrder.__iter__`: this process's share of an epoch's order",
        ("order",),
        defines="(ddp: every world_size-th index, padded as DistributedSampler pads)",
        tasks=("classify", "image"),
        section=SETUP,
    ),
    Hook(
        "per_rank",
        "expr",
        "classify `EpochOrder.__len__`: the length of this process's share",
        receives="`self.size`",
        tasks=("classify", "image"),
        section=SETUP,
    ),
    Hook(
        "val_order",
        "expr",
        "classify `replayable`: the validation order",
        receives="`range(len(val_loader.dataset))`",
        defines="(ddp: this rank's share)",
        tasks=("classify", "image"),
        section=SETUP,
    ),
    Hook(
        "save_streams",
        "slot",
        "classify `streams_kept`: a random stream to keep besides torch's and Python's",
        defines="(seed: numpy's)",
        tasks=("classify", "image"),
        section=SETUP,
    ),
    Hook(
        "seed_streams",
        "slot",
        "classify `PerSample.__getitems__`: a random stream a sample is loaded with",
        defines="`seed` (seed: numpy's)",
        tasks=("classify", "image"),
        section=SETUP,
    ),
    Hook(
        "restore_streams",
        "slot",
        "classify `streams_kept`: the kept stream given back",
        defines="(seed: numpy's)",
        tasks=("classify", "image"),
        section=SETUP,
    ),
    Hook(
        "batch_draws",
        "expr",
        "lm `Batches.next`: how many offsets to draw",
        receives="`self.batch_size`",
        defines="(ddp: the global batch)",
        tasks=("lm",),
        section=SETUP,
    ),
    Hook(
        "own_share",
        "slot",
        "lm `Batches.next`: this process's share of the offsets drawn",
        ("starts",),
        defines="(ddp: keeps its rank's rows)",
        tasks=("lm",),
        section=SETUP,
    ),
    Hook("wrap_model", "slot", "`train`, after a model is built", ("model",), defines="rebinds it", section=SETUP),
    Hook("raw", "expr", "anywhere the plain module is needed", receives="the model's name", section=SETUP),
    Hook(
        "steps_per_epoch",
        "expr",
        "classify: optimizer steps per epoch",
        receives="`len(train_loader)`",
        tasks=("classify", "image"),
        section=SETUP,
    ),
    Hook(
        "setup",
        "slot",
        "`train`, after optimizers and schedulers",
        ("models",),
        defines="the trick's run objects (`scaler`, `early_stopping`, `ema`); `models`: name to plain module",
        section=SETUP,
    ),
    Hook(
        "stateful",
        "slot",
        "`train`, the dict that last.pt saves",
        defines="`name: obj` entries with `state_dict()`",
        section=SETUP,
    ),
    Hook(
        "main_only_setup",
        "slot",
        "`train`, rank 0 only, before the loop",
        defines="`out_dir`, `total_steps`",
        section=SETUP,
    ),
    Hook(
        "before_loop",
        "slot",
        "`train`, every rank, after resume, before the loop",
        ("main", "step"),
        defines="`main`: whether this is rank 0 (`True`, or ddp's test); `step`: optimizer steps so far "
        "(tensorboard: its writer, `board`, rank 0's)",
        section=SETUP,
    ),
    Hook(
        "main_process",
        "expr",
        "whether this process is rank 0",
        receives="`True`",
        defines="(ddp: `dist.get_rank() == 0`; the progress bar is drawn by rank 0 alone through it)",
        section=SETUP,
    ),
    Hook("process_group", "block", "`main`, around the run", receives="the run", section=SETUP),
    Hook(
        "safe_to_change",
        "slot",
        "`SAFE_TO_CHANGE`, the options `--resume` accepts changed",
        defines="option names, one per line (compile: `compile_mode`)",
        section=SETUP,
    ),
    # the epoch
    Hook(
        "run_fields",
        "slot",
        "the `Run` dataclass that train() makes and train_one_epoch(run, ...) reads; train_one_epoch unpacks each "
        "trick's fields into locals of the same names",
        defines="`name: type` lines, a field each (amp: `autocast`, the scalers; ema: `ema`; tensorboard: `board`)",
    ),
    Hook(
        "eval_params",
        "expr",
        "the signature of `evaluate` and its call",
        receives="the parameter list",
        defines="adds parameters",
        tasks=("classify", "lm", "image"),
    ),
    Hook(
        "tally",
        "slot",
        "`new_tally()`: the dict of what an epoch adds up, step by step",
        defines="entries "
        '`"name": start,` (amp: `"skipped_steps": 0`, clip: `"grad_norms": []`); code reads and updates '
        '`tally["name"]`. A run saved mid-epoch keeps the tally in last.pt and resumes with it, so anything an '
        "epoch accumulates must live here",
    ),
    Hook(
        "train_loop",
        "block",
        "classify: the loop over batches",
        ("micro_step", "optimizer_step"),
        receives="the loop",
        defines="the trick's own loop names (accumulate: `window_ends`, `full_window`)",
        tasks=("classify", "image"),
    ),
    Hook(
        "window",
        "block",
        "gan and lm: one optimizer step's micro-batches",
        receives="the micro-batch body",
        defines="(accumulate: loops `i` over the window)",
        tasks=("gan", "lm"),
    ),
    Hook(
        "draw_inputs",
        "slot",
        "gan `draw_inputs(n, args, device)`: a critic step's random inputs after the real samples and the noise",
        defines="`n`, `real`, `device` (gp: `alpha`, the penalty's mixing weights)",
        tasks=("gan",),
    ),
    Hook(
        "critic_inputs",
        "expr",
        "gan: the names `draw_inputs` returns, and the critic step unpacks",
        receives="`real, noise`",
        defines="(gp: `, alpha`)",
        tasks=("gan",),
    ),
    Hook(
        "draw_count",
        "expr",
        "gan: how many inputs a step draws at once, the whole of it over micro-batches and processes",
        receives="`args.batch_size`",
        defines="**meeting point** of accumulate and ddp: each multiplies it (the window, the world)",
        tasks=("gan",),
    ),
    Hook(
        "own_part",
        "expr",
        "gan: this micro-batch's part of a step's draw `x` (rendered as `x`: no split, the draw is the batch)",
        receives="the draw's name",
        defines="(accumulate: `.chunk(K)[i]`; ddp: this rank's chunk)",
        tasks=("gan",),
    ),
    Hook(
        "window_ends",
        "expr",
        "whether this micro-batch is its window's last",
        receives="`True`",
        defines="(accumulate: its loop's test)",
    ),
    Hook(
        "forward_backward",
        "block",
        "a micro-batch's forward and backward",
        ("model", "window_ends"),
        receives="the body",
        defines="**meeting point** of accumulate and ddp: gradients are all-reduced only "
        "where `window_ends` (`no_sync` elsewhere)",
    ),
    Hook("forward", "block", "the forward pass and loss", receives="the body", defines="(amp: autocast)"),
    Hook(
        "loss_scale",
        "expr",
        "the loss as backward takes it: an expression (through slots.j2's `backward()`)",
        ("prefix",),
        receives="the loss's name",
        defines="(accumulate: its share of the window)",
    ),
    Hook(
        "backward",
        "expr",
        "what `.backward()` is called on: a call (through slots.j2's `backward()`)",
        ("prefix",),
        receives="`loss_scale`'s expression",
        defines="**meeting point** of accumulate and amp: "
        "amp's `scaler.scale(...)` takes accumulate's scaled loss; `backward()` composes the two, and adds "
        "parentheses where no call took the expression",
    ),
    Hook(
        "critic_loss",
        "block",
        "gan: the loss function `compute_critic_loss`",
        receives="the function",
        defines="(gp: the Wasserstein loss)",
        tasks=("gan",),
    ),
    Hook(
        "generator_loss",
        "block",
        "gan: the loss function `compute_generator_loss`",
        receives="the function",
        defines="(gp: the Wasserstein loss)",
        tasks=("gan",),
    ),
    Hook(
        "critic_penalty",
        "slot",
        "gan: after the critic's forward, before its backward",
        defines="reads `critic_loss`, adds to it (gp: `penalty`)",
        tasks=("gan",),
    ),
    Hook(
        "critic_stats",
        "slot",
        "gan: after the critic's backward",
        defines="the tally's per-step values (gp: `wasserstein`)",
        tasks=("gan",),
    ),
    Hook(
        "before_step",
        "slot",
        "before the optimizer step, reading the gradients",
        ("model", "prefix"),
        defines="(clip: clips them and logs their norm)",
    ),
    Hook(
        "read_gradients",
        "block",
        "around `before_step`'s code",
        ("prefix",),
        receives="the body",
        defines="**meeting point** of amp and clip: amp unscales the gradients first, only where something reads them",
    ),
    Hook(
        "step",
        "block",
        "the optimizer step, zero_grad, scheduler step",
        ("model", "prefix", "after_step"),
        receives="the body",
        defines="**meeting point** of amp (`scaler.step`, skipped steps) and the schedule: "
        "a trick that replaces the body puts `after_step` where a step happened",
    ),
    Hook(
        "after_step",
        "slot",
        "after an optimizer step that happened (not a skipped float16 step)",
        ("model", "raw"),
        defines="(ema: updates the average)",
    ),
    Hook(
        "log_step",
        "slot",
        "after the `after_step` of an optimizer step that happened (gan: the generator's)",
        ("losses", "scheduler", "main"),
        defines="`losses`: name to the loss tensor's name; `scheduler`: its "
        "`last_epoch` counts optimizer steps (tensorboard: the losses and learning rate every `--log-every` "
        "steps)",
    ),
    Hook(
        "step_values",
        "expr",
        "per-step values, less those of steps that did not count (gan: its means; "
        "classify and lm: through the `kept` that `epoch_metrics` offers)",
        receives="the tensor's text",
        defines="(amp: `finite(...)`, skipped float16 steps); partials reach it through `kept`",
        tasks=("gan",),
    ),
    Hook(
        "reduce",
        "slot",
        "after an epoch's tensors are stacked",
        ("tensor", "mean"),
        defines="(ddp: all-reduce; `mean`: averaged over ranks)",
    ),
    Hook(
        "train_samples",
        "expr",
        "classify: the divisor of the training loss; lm: the tokens of the epoch",
        receives="`len(train_loader.sampler)`, `tokens`",
        defines="(ddp: times the world size)",
        tasks=("classify", "lm", "image"),
    ),
    Hook(
        "epoch_metrics",
        "slot",
        "`train_one_epoch`, the metrics it returns (from `tally`)",
        ("prefix", "kept"),
        defines="`metrics[...]`; `kept`: slots.j2's macro for `step_values` (classify, lm)",
    ),
    # the run
    Hook("resume", "slot", "`train`, after last.pt is loaded", defines="`checkpoint`", section=RUN),
    Hook(
        "check_checkpoint",
        "slot",
        "`train`, after `load_resumable` read last.pt",
        defines="`checkpoint`, `out_dir`, `fail` (ddp: the number of processes)",
        section=RUN,
    ),
    Hook(
        "rng_state",
        "expr",
        "`checkpoint_at`: the random states last.pt keeps",
        receives="`rng_state()`: torch's, on every device",
        defines="(seed: `| stream_states()`, Python's and numpy's)",
        section=RUN,
    ),
    Hook(
        "set_rng_state",
        "slot",
        "`train`, after `set_rng_state(rng)` restored torch's",
        defines="`rng` (seed: `set_stream_states(rng)`)",
        section=RUN,
    ),
    Hook(
        "own",
        "expr",
        "this process's entry of what a save gathered from every process (random states, an epoch's tally)",
        receives="the gathered value",
        defines="(ddp: `[dist.get_rank()]`)",
        section=RUN,
    ),
    Hook(
        "gather",
        "expr",
        "what a save collects from every rank",
        receives="this process's value",
        defines="(ddp: a list, one per rank)",
        section=RUN,
    ),
    Hook(
        "agree",
        "expr",
        "a stop every rank agrees on",
        receives="this process's flag",
        defines="(ddp: all-reduced)",
        section=RUN,
    ),
    Hook(
        "eval_model",
        "expr",
        "the model validated (classify, lm) or scored and plotted (gan)",
        receives="the plain module",
        defines="(ema: `ema.module`)",
        section=RUN,
    ),
    Hook(
        "epoch_end",
        "slot",
        "`train`, after the row is made",
        defines="`row`, `epoch`, `start_epoch` (this "
        "process's first); defines `improved` (early-stop), which `valid_tail` and `save_best` read",
        section=RUN,
    ),
    Hook("valid_tail", "expr", "the console line's end", receives='`""`', defines="`improved`", section=RUN),
    Hook(
        "stopped_code",
        "expr",
        "`exit_stopped`: the exit code of a run stopped by a signal",
        receives="`128 + the signal`",
        defines="(ddp: under slurm.sbatch, `TRICKS_REQUEUE` set, exit 0)",
        section=RUN,
    ),
    Hook(
        "resume_advice",
        "block",
        "`exit_stopped`: the lines that say how to resume",
        receives="the two print lines",
        defines="(ddp: under slurm.sbatch, that the requeued job resumes)",
        section=RUN,
    ),
    Hook(
        "launcher",
        "expr",
        "the resume command's start",
        receives='`["python", "train.py"]`',
        defines="(ddp: torchrun's)",
        section=RUN,
    ),
    Hook("main_only", "block", "code that rank 0 alone runs (files)", receives="the body", section=RUN),
    Hook(
        "save_best",
        "slot",
        "`save_epoch`, before last.pt is written",
        ("models",),
        defines="`checkpoint`, `row`, `improved`; `models`: name to the weights to keep",
        section=RUN,
    ),
    Hook(
        "epoch_files",
        "slot",
        "`save_epoch`, rank 0, after the epoch's files are handed to the writer",
        ("step",),
        defines="`row`, `epoch` (tensorboard: every column as a scalar)",
        section=RUN,
    ),
    Hook(
        "run_end",
        "slot",
        "`train`'s `finally`, rank 0: every way out (the end, Ctrl-C, SIGTERM, a diverging loss)",
        defines="(tensorboard: closes its writer)",
        section=RUN,
    ),
    Hook(
        "best_weights",
        "expr",
        "the weights best.pt keeps of a model",
        ("model",),
        receives='`checkpoint["name"]`',
        defines="(ema: the average's)",
        section=RUN,
    ),
    Hook(
        "saved_weights",
        "expr",
        "lm `--sample`: the weights taken from last.pt when there is no best.pt",
        ("checkpoint",),
        receives='`last["model"]`',
        defines="(ema: the average's)",
        tasks=("lm", "image"),
        section=RUN,
    ),
    Hook("stop_check", "slot", "`train`, the end of an epoch", defines="`break` out of the loop", section=RUN),
    Hook(
        "before_reading",
        "slot",
        "what must come before a rank reads the run's files",
        defines="(ddp: barrier)",
        section=RUN,
    ),
    Hook(
        "after_training",
        "block",
        "`train`, after the loop: the weights the run ends with",
        ("models", "before_reading"),
        receives="the body",
        defines="(ema: loads the average; early-stop replaces that with best.pt's weights, after `before_reading`)",
        section=RUN,
    ),
    Hook(
        "after_main",
        "slot",
        'under `if __name__ == "__main__":`, after a successful `main()`',
        defines="(ddp: `os._exit(0)`)",
        section=RUN,
    ),
    # the project's other files
    Hook("readme", "slot", "README.md: the trick's paragraph", section=PROJECT),
    Hook(
        "requirements", "slot", "requirements.txt: the packages the trick adds", defines="one per line", section=PROJECT
    ),
)
BY_NAME = {hook.name: hook for hook in HOOKS}

# What each skeleton owes base.py.j2: the variables it sets, the blocks it must fill, the blocks it may fill.
SKELETON_SETS = ("models", "run_fields", "step_count", "epoch_units", "task_stdlib_imports", "task_imports")
SKELETON_FILLS = ("docstring", "data_and_epoch", "build", "epoch", "row", "summary")
SKELETON_MAY_FILL = (
    "check_args",
    "checks",
    "stateful",
    "before_resume",
    "restore",
    "checkpoint",
    "end_of_run",
    "failures",
)

# The places where a template still reads another trick's choice (`cookiecutter.<trick>`), with the reason a
# hook point would cost more than it clarifies there; a test fails on any other.
FLAG_READS = {
    ("tricks/accumulate.j2", "ddp"): "the language model's window names `i` only where ddp's `window_ends` reads it "
    "(ruff's B007 refuses an unused loop variable)",
    ("tricks/clip.j2", "accumulate"): "the per-epoch norm's shape (one per window) and the README's wording",
    ("tricks/clip.j2", "amp"): "README wording: after the scaler unscales them",
    ("tricks/compile.j2", "ddp"): "a comment on the order (inside the DDP wrapper) and the README's wording",
    ("tricks/compile.j2", "ema"): "README wording: the average runs eagerly",
    ("tricks/compile.j2", "gp"): "README wording: the penalty's pass runs eagerly",
    ("tricks/ddp.j2", "seed"): "the language model's batches keep --seed under ddp, 0 without it, so every rank "
    "draws the same",
    ("tricks/ddp.j2", "accumulate"): "README wording: all-reduced once per optimizer step",
    ("tricks/ema.j2", "early_stop"): "a comment and the README's wording: best.pt keeps the average",
    ("tricks/ema.j2", "accumulate"): "README wording: once per accumulation window",
    ("tricks/ema.j2", "amp"): "README wording: not on a skipped float16 step",
    ("tricks/gp.j2", "amp"): "the penalty's amp form (autocast, the scale passed in); the float32 form is the one "
    "tested bit for bit against two public implementations",
    ("tricks/seed.j2", "ddp"): "each rank seeds seed + rank; the GAN's every rank the same seed, since each draws a "
    "step's whole batch",
    ("classifier.j2", "seed"): "a docstring's wording: numpy's stream is seeded too",
    ("gan/train.py.j2", "gp"): "the plain game's import of torch.nn.functional, which WGAN-GP's losses do not use",
    ("gan/train.py.j2", "accumulate"): "a comment's wording: a row per micro-batch",
    ("lm/train.py.j2", "accumulate"): "a comment's wording: each micro-batch's loss",
    ("lm/train.py.j2", "ddp"): "a comment's wording: the same offsets on every rank",
    ("args.j2", "gp"): "--n-critic's default: 5 for WGAN-GP, 1 for the plain game",
    ("slots.j2", "gp"): "the docstring's command: --gp implies --task gan",
    ("README.md", "ddp"): "the project README's sections on torchrun and SLURM, and its wording on each rank's share",
    ("README.md", "accumulate"): "the image task's batch norm: K micro-batches are close to one batch, not equal",
    ("README.md", "early_stop"): "the run folder's best.pt, and the GAN's --monitor wording",
    ("README.md", "lr_plot"): "the run folder's lr_schedule.png",
    ("README.md", "gp"): "the GAN's seams: the penalty is added in the loop",
    ("README.md", "seed"): "the classifier's data: numpy's stream is seeded too",
}


def kwargs_text(hook: Hook) -> str:
    parts = [hook.receives] if hook.receives else []
    return ", ".join(parts + [f"`{name}`" for name in hook.offers])


def markdown() -> str:
    """The hook tables of docs/adding-a-trick.md, a section per part of the script."""
    out = []
    for section in (SETUP, EPOCH, RUN, PROJECT):
        out += [f"### {section}", "", "| hook | kind | where | receives | may use / define | tasks |",
                "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for hook in (h for h in HOOKS if h.section == section):
            tasks = "all" if hook.tasks == ALL else ", ".join(hook.tasks)
            cells = [f"`{hook.name}`", hook.kind, hook.where, kwargs_text(hook), hook.defines, tasks]
            out.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


DOC = Path(__file__).parent.parent / "docs" / "adding-a-trick.md"
START, END = "<!-- hook tables: written by python -m generator.hooks --write -->", "<!-- end of hook tables -->"


def with_tables(doc: str) -> str:
    """doc with the text between its markers replaced by the tables."""
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    return pattern.sub(lambda _: f"{START}\n{markdown()}{END}", doc)


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        DOC.write_text(with_tables(DOC.read_text()))
    else:
        sys.stdout.write(markdown())


# ---------------------------------------------------------------------------------------------------------------
# the check: the templates against the table

SHARED = ("base.py.j2", "common.j2", "args.j2", "README.md", "requirements.txt")  # every skeleton's
SHARED_BY = {"classifier.j2": ("classify", "image")}  # some skeletons' own
MECHANISM = {"slot": {"width", "sep", "lead"}, "expr": {"default"}, "block": {"width"}}  # slots.j2's own arguments
WRAPPERS = {
    "backward": [("expr", "loss_scale"), ("expr", "backward")],
    "kept": [("expr", "step_values")],
    "run_class": [("slot", "run_fields")],
    "run_names": [("slot", "run_fields")],
    "run_unpack": [("slot", "run_fields")],
}


@dataclass(frozen=True)
class Call:
    file: str
    kind: str
    name: str
    kwargs: frozenset[str]


def template_files(root: Path) -> dict[str, str]:
    """Every template of the cookiecutter template at root (templates/train), by its name as Jinja knows it."""
    files = {str(p.relative_to(root / "templates")): p.read_text() for p in sorted((root / "templates").rglob("*.j2"))}
    project = next(root.glob("{{*"))
    files.update({p.name: p.read_text() for p in sorted(project.iterdir()) if p.name in SHARED})
    return files


def hook_calls(name: str, source: str, env) -> list[Call]:
    """The hook points a template names: slot/expr/block calls with a literal name, and the wrappers around them."""
    from jinja2 import nodes

    calls = []
    for node in env.parse(source).find_all(nodes.Call):
        if not isinstance(node.node, nodes.Name):
            continue
        called, keys = node.node.name, frozenset(k.key for k in node.kwargs)
        if called in MECHANISM and node.args and isinstance(node.args[0], nodes.Const):
            calls.append(Call(name, called, node.args[0].value, keys - MECHANISM[called]))
        elif called in WRAPPERS:
            calls += [Call(name, kind, hook, keys) for kind, hook in WRAPPERS[called]]
        elif called == "imports" and isinstance(node.args[1], nodes.Const):  # imports(base, "stdlib_imports")
            calls.append(Call(name, "slot", node.args[1].value, keys))
    return calls


def task_of(file: str) -> tuple[str, ...]:
    """The skeletons a template's hook calls count for: its own task's, or every one for a shared file."""
    if file in SHARED:
        return ALL
    if file in SHARED_BY:
        return SHARED_BY[file]
    head = file.split("/")[0]
    return (head,) if head in ALL else ()


def check(root: Path) -> list[str]:
    """What in the templates at root disagrees with the table: each problem in one line that names its file."""
    from jinja2 import Environment, nodes

    from generator.tricks import TRICKS

    env = Environment(extensions=["jinja2.ext.do", "jinja2.ext.loopcontrols"])
    files = template_files(root)
    problems, named = [], {}
    for file, source in files.items():
        if file == "slots.j2":  # the mechanism: its calls are the wrappers' insides
            continue
        for call in hook_calls(file, source, env):
            hook = BY_NAME.get(call.name)
            if hook is None:
                problems.append(f"{file}: {call.kind}({call.name!r}) names no hook point of generator/hooks.py")
                continue
            if hook.kind != call.kind:
                problems.append(f"{file}: {call.kind}({call.name!r}), but the hook point is a {hook.kind}")
            for key in sorted(call.kwargs - set(hook.offers)):
                problems.append(f"{file}: {call.kind}({call.name!r}) offers {key}=, which the table does not list")
            for task in task_of(file):
                named.setdefault(call.name, set()).add(task)
    for hook in HOOKS:
        tasks = named.get(hook.name, set())
        if not tasks:
            problems.append(f"generator/hooks.py: no skeleton names the hook point {hook.name!r}")
        elif tasks != set(hook.tasks):
            problems.append(f"generator/hooks.py: {hook.name!r} is named by {sorted(tasks)}, the table says "
                            f"{list(hook.tasks)}")  # fmt: skip
    for file, source in files.items():
        if not file.startswith("tricks/"):
            continue
        for macro in env.parse(source).find_all(nodes.Macro):
            hook = BY_NAME.get(macro.name)
            if hook is None:
                problems.append(f"{file}: macro {macro.name}() fills no hook point of generator/hooks.py")
                continue
            params = [arg.name for arg in macro.args]
            if hook.kind != "slot":
                params = params[1:]  # an expr's text so far, a block's body so far
                if not macro.args:
                    problems.append(f"{file}: macro {macro.name}() takes no text: a {hook.kind} passes it one")
            for param in params:
                if param not in hook.offers:
                    problems.append(f"{file}: macro {macro.name}() takes {param}, which {macro.name!r} does not offer")
    trick_names = {trick.name for trick in TRICKS}
    for file, source in files.items():
        own = file.removeprefix("tricks/").removesuffix(".j2")
        for read in sorted(set(re.findall(r"cookiecutter\.(\w+)", source)) & trick_names - {own}):
            if (file, read) not in FLAG_READS:
                problems.append(f"{file}: reads --{read.replace('_', '-')}'s choice, which FLAG_READS does not list")
    for file, read in FLAG_READS:
        if f"cookiecutter.{read}" not in files.get(file, ""):
            problems.append(f"generator/hooks.py: FLAG_READS lists {file} reading {read}, which it no longer does")
    problems += check_skeletons(files, env)
    return problems


def check_skeletons(files: dict[str, str], env) -> list[str]:
    """Each skeleton sets what base.py.j2 reads and fills only blocks base.py.j2 has (Jinja drops any other)."""
    from jinja2 import nodes

    problems = []
    base_blocks = {block.name for block in env.parse(files["base.py.j2"]).find_all(nodes.Block)}
    if base_blocks != set(SKELETON_FILLS + SKELETON_MAY_FILL):
        problems.append(f"base.py.j2: its blocks {sorted(base_blocks)} are not generator/hooks.py's SKELETON_FILLS "
                        "and SKELETON_MAY_FILL")  # fmt: skip
    for task in ALL:
        file = f"{task}/train.py.j2"
        tree = env.parse(files[file])
        blocks = {block.name for block in tree.find_all(nodes.Block)}
        sets = [node.target for node in tree.body if isinstance(node, (nodes.Assign, nodes.AssignBlock))]
        assigned = {name.name for target in sets for name in [target, *target.find_all(nodes.Name)]
                    if isinstance(name, nodes.Name)}  # fmt: skip
        problems += [f"{file}: fills block {b}, which base.py.j2 does not have" for b in sorted(blocks - base_blocks)]
        problems += [f"{file}: does not fill block {b}" for b in SKELETON_FILLS if b not in blocks]
        problems += [f"{file}: does not set {name}" for name in SKELETON_SETS if name not in assigned]
    return problems
