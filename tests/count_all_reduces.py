"""Run a rendered --ddp train.py in this process, as a group of one, and print how many times DDP
all-reduced each model's gradients, as JSON. Used by tests/test_ddp.py:

    python -m tests.count_all_reduces PROJECT [train.py options...]

DDP's communication hook runs once per gradient all-reduce, so it counts them.
"""

import json
import os
import sys
from pathlib import Path

import torch

from tests.helpers import load, run_main


def count_all_reduces(project: Path, argv: list[str]) -> dict[str, int]:
    module = load(project / "train.py")
    counts = {}

    def counting_hook(name, bucket):
        counts[name] += 1
        future = torch.futures.Future()
        future.set_result(bucket.buffer())  # a group of one: the sum is the rank's own gradient
        return future

    class CountingDDP(module.DDP):
        def __init__(self, model, **kwargs):
            super().__init__(model, **kwargs)
            gan = hasattr(module, "build_models")  # a GAN script builds a generator and a critic
            name = ("critic" if model[-1].out_features == 1 else "generator") if gan else "model"
            counts[name] = 0
            self.register_comm_hook(name, counting_hook)

    module.DDP = CountingDDP
    run_main(module, argv)
    return counts


if __name__ == "__main__":
    print(json.dumps(count_all_reduces(Path(sys.argv[1]), sys.argv[2:])), flush=True)
    # skip the interpreter's teardown: a gloo process group's destructor, reached when the DDP
    # objects are freed there, once hung in a test process; the counting is done by now
    os._exit(0)
