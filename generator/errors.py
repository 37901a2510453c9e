"""Errors a user can cause: each becomes one line on stderr and an exit code, never a traceback."""


class TricksError(Exception):
    """A failure the user can fix; its message is the whole report."""

    exit_code = 1


class UsageError(TricksError):
    """Options that do not fit together, or name nothing we have."""

    exit_code = 2


class TemplateError(TricksError):
    """A template failed to render; the message names the template file."""
