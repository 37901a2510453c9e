"""A classify project edited as a user with real data edits it: a dataset that draws random augmentation from
torch's and Python's generators in __getitem__ (as image transforms do), decoded by DataLoader workers, and a
model with batch norm (whose running statistics see every sample). Each load can be counted in a file."""

from __future__ import annotations

from pathlib import Path

DATASET = '''

class Jittered(torch.utils.data.Dataset):
    """Points with random augmentation drawn per sample, as image transforms draw crops and flips."""

    def __init__(self, points, labels):
        self.points, self.labels = points, labels

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        if os.environ.get("LOADS"):  # each load, counted: one line per sample
            with open(os.environ["LOADS"], "a") as f:
                f.write(f"{index}\\n")
        if os.environ.get("SLOW"):
            time.sleep(float(os.environ["SLOW"]))
        noise = 0.05 * torch.randn(2)
        scale = 0.9 + 0.2 * random.random()
        return self.points[index] * scale + noise, self.labels[index]


def build_data(args):'''


def edit(project: Path, batch_norm: bool = True) -> Path:
    """Put Jittered (and batch norm) into the project's train.py, as a user's edit; returns the project."""
    script = project / "train.py"
    text = script.read_text()
    edits = [
        ("\n\ndef build_data(args):", DATASET),
        (
            "train_set = TensorDataset(points[:2000], labels[:2000])",
            "train_set = Jittered(points[:2000], labels[:2000])",
        ),
    ]
    if batch_norm:
        edits.append(
            (
                "        nn.Linear(2, 64),\n        nn.ReLU(),",
                "        nn.Linear(2, 64),\n        nn.BatchNorm1d(64),\n        nn.ReLU(),",
            )
        )
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new, 1)
    if "\nimport random\n" not in text:
        text = text.replace("\nimport shlex\n", "\nimport random\nimport shlex\n", 1)
    script.write_text(text)
    return project
