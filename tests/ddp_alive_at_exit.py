"""Run a rendered --ddp train.py in this process (under torchrun, as one of its ranks) with Python's
automatic garbage collection off, and print on stderr how many DDP wrappers are alive after main()
returns and after the atexit functions ran. Used by tests/test_ddp.py:

    torchrun --standalone --nproc_per_node 2 -m tests.ddp_alive_at_exit PROJECT [train.py options...]

A DDP wrapper that lives on in a reference cycle is freed at interpreter shutdown, and freeing its
process group then aborted rank 1 now and then ("terminate called without an active exception").
Whether automatic collection freed it first was a matter of chance; with it off, the count shows what
the script itself guarantees.
"""

import atexit
import gc
import sys
from pathlib import Path

from torch.nn.parallel import DistributedDataParallel

from tests.helpers import load, run_main


def alive() -> int:
    return sum(isinstance(obj, DistributedDataParallel) for obj in gc.get_objects())


if __name__ == "__main__":
    module = load(Path(sys.argv[1]) / "train.py")
    gc.disable()
    run_main(module, sys.argv[2:])
    after_main = alive()
    atexit._run_exitfuncs()  # what Python runs first as it exits, while it is still whole
    sys.stderr.write(f"DDP alive: {after_main} after main, {alive()} after the atexit functions\n")
