"""torch-tricks: generate plain-PyTorch training scripts with exactly the tricks you pick."""

__version__ = "0.1.0"

from generator.options import Options, Task
from generator.render import generate, render_script

__all__ = ["Options", "Task", "__version__", "generate", "render_script"]
