"""Your own data and models in the seams: plain loaders under --ddp, float64 refused, your own sample_real,
a run that fails before its first save."""

import re
import shutil

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from tests.faults import one_line
from tests.helpers import checkpoint, max_difference, render, run_main, run_script
from tests.test_ddp import torchrun


@pytest.mark.slow  # a training script in a process of its own
def test_plain_data_loaders_of_your_own_work_under_ddp(tmp_path, projects):
    """build_data replaced as the README says, with plain shuffled DataLoaders: under torchrun each of the two
    processes reads its half of each epoch (each sample once, no sample on both ranks), and the run ends with
    the weights of one process reading batches twice as large."""
    project = tmp_path / "own"
    shutil.copytree(projects["ddp"], project)
    script = (project / "train.py").read_text()
    own = (
        "_toy_data = build_data\n\n\n"
        "class Logged(torch.utils.data.Dataset):\n"
        "    def __init__(self, dataset, name):\n"
        "        self.dataset, self.name = dataset, name\n\n"
        "    def __len__(self):\n"
        "        return len(self.dataset)\n\n"
        "    def __getitem__(self, index):\n"
        "        with open(os.environ['LOADS'], 'a') as f:\n"
        "            f.write(f\"{os.environ.get('RANK', '-')} {self.name} {index}\\n\")\n"
        "        return self.dataset[index]\n\n\n"
        "def build_data(args):\n"
        "    train_loader, val_loader = _toy_data(args)\n"
        "    return (\n"
        "        DataLoader(Logged(train_loader.dataset, 'train'), batch_size=args.batch_size, shuffle=True),\n"
        "        DataLoader(Logged(val_loader.dataset, 'val'), batch_size=100),\n"
        "    )\n\n\n"
        "def build_model(args):"
    )
    (project / "train.py").write_text(script.replace("def build_model(args):", own, 1))
    common = ["--epochs", 2, "--seed", 9, "--warmup-steps", 5]
    loads = tmp_path / "loads"
    env = {"LOADS": str(loads)}
    result = torchrun(project, *common, "--batch-size", 25, "--out-dir", tmp_path / "two", timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    one = run_script(project, *common, "--batch-size", 50, "--out-dir", tmp_path / "one", env=env)
    assert one.returncode == 0, one.stderr[-3000:]
    read = [line.split() for line in loads.read_text().splitlines()]
    for name, size in (("train", 2000), ("val", 500)):
        ranks = [[int(i) for r, kind, i in read if (r, kind) == (rank, name)] for rank in ("0", "1")]
        if name == "train":
            ranks = [indices[1:] for indices in ranks]  # the first: check_inputs' look at one sample
        for rank in ranks:
            assert len(rank) == size, f"{name}: each rank reads its half in each of the 2 epochs"
        for epoch in (0, 1):
            halves = [set(indices[epoch * size // 2 : (epoch + 1) * size // 2]) for indices in ranks]
            assert not halves[0] & halves[1] and halves[0] | halves[1] == set(range(size)), (name, epoch)
    two_last, one_last = checkpoint(tmp_path / "two" / "last.pt"), checkpoint(tmp_path / "one" / "last.pt")
    assert max_difference(two_last["model"], one_last["model"]) < 1e-5


def test_float64_inputs_are_refused_naming_their_dtype(modules, monkeypatch, capsys, tmp_path):
    module = modules["classify"]
    build_data = module.build_data

    def float64_data(args):
        train_loader, val_loader = build_data(args)
        x, y = train_loader.dataset.tensors
        return DataLoader(TensorDataset(x.double(), y), batch_size=args.batch_size), val_loader

    monkeypatch.setattr(module, "build_data", float64_data)
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--out-dir", tmp_path / "run"])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "error: build_data gives torch.float64 inputs, the model's weights are torch.float32: convert them"
    )


def test_float64_real_samples_are_refused_naming_their_dtype(modules, monkeypatch, capsys, tmp_path):
    module = modules["gan"]
    sample_real = module.sample_real
    monkeypatch.setattr(module, "sample_real", lambda n, device: sample_real(n, device).double())
    with pytest.raises(SystemExit) as exit_info:
        run_main(module, ["--out-dir", tmp_path / "run"])
    assert exit_info.value.code == 2
    assert one_line(capsys.readouterr().err) == (
        "error: sample_real gives torch.float64 points, the models' weights are torch.float32: convert them"
    )


def test_a_sample_real_of_your_own_sets_the_modes_and_the_plot(tmp_path, modules, monkeypatch, capsys):
    """A 25-Gaussian grid as the README says: sample_real(n, device), CENTRES and STD set to its modes."""
    module = modules["gan"]
    grid = torch.tensor([[x, y] for x in range(-2, 3) for y in range(-2, 3)], dtype=torch.float32)
    monkeypatch.setattr(module, "CENTRES", grid)

    def sample_grid(n, device):
        return (grid[torch.randint(len(grid), (n,))] + 0.02 * torch.randn(n, 2)).to(device)

    monkeypatch.setattr(module, "sample_real", sample_grid)
    run_main(module, ["--epochs", 1, "--steps-per-epoch", 3, "--out-dir", tmp_path / "run"])
    assert re.search(r"modes = \d+/25,", capsys.readouterr().out)
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0


def test_the_sample_plot_spans_the_real_data(tmp_path, modules, monkeypatch):
    """Data ten times the ring's size: the plot's limits follow it (they were fixed to the ring's)."""
    from matplotlib.axes import Axes

    module, limits = modules["gan"], []
    monkeypatch.setattr(module, "sample_real", lambda n, device: 20 * torch.rand(n, 2, device=device) - 10)
    set_axes = Axes.set

    def recording_set(self, **kwargs):
        limits.extend(kwargs[key] for key in ("xlim", "ylim") if key in kwargs)
        return set_axes(self, **kwargs)

    monkeypatch.setattr(Axes, "set", recording_set)
    generator = torch.nn.Linear(2, 2)
    module.plot_samples(generator, torch.randn(500, 2), tmp_path / "samples.png")
    assert len(limits) == 2
    for low, high in limits:
        assert -16 < low < -10 and 10 < high < 16


def test_the_readmes_give_sample_real_its_signature(projects, tmp_path):
    from tests.helpers import ROOT

    gan = render(tmp_path / "gan", "gan", early_stop=True)
    assert "`sample_real(n, device)`" in (gan / "README.md").read_text()
    assert "`sample_real(n, device)`" in (ROOT / "README.md").read_text()
    assert "sample_real(n)" not in (gan / "README.md").read_text() + (ROOT / "README.md").read_text()
    assert "def sample_real(n, device):" in (gan / "train.py").read_text()
    assert "real = sample_real(n, device)" in (gan / "train.py").read_text()
    assert "draw_inputs(args.batch_size, args, device)" in (gan / "train.py").read_text()


@pytest.mark.slow  # a training script in a process of its own
def test_a_run_that_fails_before_its_first_save_leaves_no_run_folder(tmp_path, projects):
    project = tmp_path / "p"
    shutil.copytree(projects["plain"], project)
    result = run_script(project, "--lr", "1e30", "--epochs", 3)
    assert result.returncode == 1
    assert one_line(result.stderr).endswith("; stopped, nothing was saved")
    assert list((project / "runs").iterdir()) == []
