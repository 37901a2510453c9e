"""The options of one render. This dataclass is the single source for the `tricks new` flags (cli.py
builds them from its fields), the template context and the answers file a project records."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from enum import Enum
from pathlib import Path


class Task(str, Enum):
    """What the generated script trains."""

    classify = "classify"
    gan = "gan"


@dataclass(frozen=True)
class Options:
    """Which script to render: a task and the tricks wired into it (catalogue order)."""

    task: Task = Task.classify
    seed: bool = False
    gp: bool = False
    accumulate: bool = False
    amp: bool = False
    clip: bool = False
    lr_plot: bool = False
    early_stop: bool = False
    ddp: bool = False

    def __post_init__(self) -> None:
        from generator.errors import UsageError

        if not isinstance(self.task, Task):
            raise UsageError(f"unknown task {self.task!r}; the tasks are: {', '.join(t.value for t in Task)}")
        for name in TRICK_NAMES:
            if not isinstance(getattr(self, name), bool):
                raise UsageError(f"{name} must be true or false, not {getattr(self, name)!r}")
        if self.gp and self.task is not Task.gan:
            raise UsageError("--gp (WGAN-GP) trains a GAN: drop --task classify, or use --task gan")

    @classmethod
    def create(cls, task: Task | str | None = None, **tricks: bool) -> Options:
        """Options from CLI-style input: no task means gan when --gp is on, else classify."""
        from generator.errors import UsageError

        unknown = set(tricks) - set(TRICK_NAMES)
        if unknown:
            raise UsageError(f"unknown option(s): {', '.join(sorted(unknown))}")
        if task is None:
            task = Task.gan if tricks.get("gp") else Task.classify
        try:
            task = Task(task)
        except ValueError:
            raise UsageError(f"unknown task {task!r}; the tasks are: {', '.join(t.value for t in Task)}") from None
        return cls(task=task, **tricks)

    @classmethod
    def from_answers(cls, path: Path) -> tuple[Options, str]:
        """The options and project name an answers file recorded; refused in one line when the file is
        not one this version of torch-tricks wrote or can read."""
        import yaml

        from generator import __version__
        from generator.errors import UsageError

        try:
            answers = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UsageError(f"answers file {path} is not UTF-8 text") from None
        except (OSError, yaml.YAMLError) as err:
            raise UsageError(f"cannot read answers file {path}: {err}") from None
        if not isinstance(answers, dict):
            raise UsageError(f"answers file {path} holds no answers")
        for key in answers:
            if not isinstance(key, str):
                raise UsageError(f"answers file {path}: {key!r} is not a name of an answer")
        made_by = answers.get("_tricks_version", __version__)
        if version_tuple(made_by) > version_tuple(__version__):
            raise UsageError(
                f"answers file {path} was written by torch-tricks {made_by}, newer than this one ({__version__}): "
                "upgrade torch-tricks to render it"
            )
        answers = {key: value for key, value in answers.items() if not key.startswith("_")}
        project_name = answers.pop("project_name", Path(path).absolute().parent.name)
        check_project_name(project_name, path)
        return cls.create(**answers), project_name

    @property
    def tricks(self) -> list[str]:
        """The chosen tricks' names, in catalogue order."""
        return [name for name in TRICK_NAMES if getattr(self, name)]

    def flags(self) -> list[str]:
        """The `tricks new` flags that give these options."""
        task = ["--task", self.task.value] if self.task is Task.gan and not self.gp else []
        return task + ["--" + name.replace("_", "-") for name in self.tricks]

    def context(self, project_name: str, version: str) -> dict:
        """The cookiecutter context (cookiecutter.json's variables) for these options."""
        answers = asdict(self) | {"task": self.task.value}
        return {"project_name": project_name, **answers, "_tricks_version": version}


TRICK_NAMES = tuple(f.name for f in fields(Options) if f.name != "task")


def version_tuple(version: object) -> tuple[int, ...]:
    """A version such as 1.2.3 as (1, 2, 3), to compare versions; anything else is refused."""
    from generator.errors import UsageError

    parts = version.split(".") if isinstance(version, str) else []
    if not parts or not all(part.isdigit() for part in parts):
        raise UsageError(f"_tricks_version {version!r} in the answers file is not a version such as 0.1.0")
    return tuple(int(part) for part in parts)


def check_project_name(name: object, path: Path) -> None:
    """A recorded project name is the folder `tricks new --answers` writes to when given no DEST: one plain
    folder name, nothing that leads elsewhere (`..`, an absolute path)."""
    from generator.errors import UsageError

    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name or "\0" in name:
        raise UsageError(f"answers file {path}: project_name {name!r} is not a plain folder name")
