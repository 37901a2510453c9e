"""Lay out the project's Python files with ruff's formatter, as `tricks new` does: the templates write each
statement on one line and leave line breaks and wrapping to it. Plain `cookiecutter` runs this hook in the new
project's folder; without ruff installed the files stay as rendered (valid Python, some lines long)."""

import subprocess
import sys
from pathlib import Path

try:
    from ruff.__main__ import find_ruff_bin
except ImportError:
    print("note: ruff is not installed; the project's Python files are left unformatted", file=sys.stderr)
else:
    files = sorted(str(path) for path in Path.cwd().glob("*.py"))
    subprocess.run([find_ruff_bin(), "format", "--no-cache", *files], check=True, stdout=subprocess.DEVNULL)
