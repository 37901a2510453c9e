"""The options of one render. This dataclass is the single source for the `tricks new` flags (cli.py
builds them from its fields), the template context and the answers file a project records. Its fields
are the task and a bool per trick of the catalogue (generator/tricks.py), in catalogue order."""

from __future__ import annotations

from dataclasses import asdict, field, make_dataclass
from pathlib import Path

from generator.tricks import TRICKS, Task

TRICK_NAMES = tuple(trick.name for trick in TRICKS)


class OptionsBase:
    """Which script to render: a task and the tricks wired into it (catalogue order)."""

    task: Task

    def __post_init__(self) -> None:
        from generator.errors import UsageError

        if not isinstance(self.task, Task):
            raise UsageError(f"unknown task {self.task!r}; the tasks are: {', '.join(t.value for t in Task)}")
        for trick in TRICKS:
            if not isinstance(getattr(self, trick.name), bool):
                raise UsageError(f"{trick.name} must be true or false, not {getattr(self, trick.name)!r}")
            if getattr(self, trick.name) and self.task not in trick.tasks:
                tasks = " or ".join(f"--task {task.value}" for task in trick.tasks)
                raise UsageError(f"{trick.flag} does not apply to --task {self.task.value}: use {tasks}")

    @classmethod
    def create(cls, task: Task | str | None = None, **tricks: bool) -> OptionsBase:
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
    def from_answers(cls, path: Path) -> tuple[OptionsBase, str]:
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
        task = ["--task", self.task.value] if self.task is not Task.classify and not self.gp else []
        return task + ["--" + name.replace("_", "-") for name in self.tricks]

    def context(self, project_name: str, version: str) -> dict:
        """The cookiecutter context (cookiecutter.json's variables) for these options."""
        answers = asdict(self) | {"task": self.task.value}
        return {"project_name": project_name, **answers, "_tricks_version": version}


Options = make_dataclass(
    "Options",
    [("task", Task, field(default=Task.classify))] + [(name, bool, field(default=False)) for name in TRICK_NAMES],
    bases=(OptionsBase,),
    frozen=True,
)
Options.__module__, Options.__doc__ = __name__, OptionsBase.__doc__


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
