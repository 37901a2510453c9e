#!/usr/bin/env bash
# On a CUDA machine (a few minutes): the rendered script on a mid-size model without --amp, with
# --amp float16 (GradScaler) and bfloat16, and with --compile; prints the speed-up and final losses
# side by side; then the language model (--task lm): tokens per second and model FLOPs utilisation,
# in float32, bfloat16 and bfloat16 compiled; then the image classifier (--task image): images per second,
# float32 against --amp with channels_last.
# Only where a GPU is lent; the test suite never needs one.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
"$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: nothing to check')"
timeout 600 "$PYTHON" benchmarks/gpu_check.py
