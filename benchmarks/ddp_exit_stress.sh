#!/usr/bin/env bash
# Stress check for a clean exit under torchrun (issue 13, item 9): the two-process run, N times (default
# 20), beside a busy-looping CPU hog. Every run must exit 0; before the fix about one in twenty aborted at
# exit on rank 1 ("terminate called without an active exception", SIGABRT) after training ended.
# Not part of `make test` (a few minutes): bash benchmarks/ddp_exit_stress.sh [N] [HOGS] [TRICKS...]
# (defaults: 20 runs, 1 hog, the six tricks of the headline; e.g. `... 30 2 --seed` for --ddp --seed alone)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-20}
hogs=${2:-1}
shift $(($# > 2 ? 2 : $#))
tricks=("${@:---seed --amp --clip --accumulate --lr-plot --early-stop}")
python=$(realpath -s "${PYTHON:-.venv/bin/python}")
work=$(mktemp -d)
pids=()
trap '[ ${#pids[@]} -eq 0 ] || kill "${pids[@]}"; rm -rf "$work"' EXIT
# shellcheck disable=SC2068
"$python" -m generator new "$work/p" --ddp ${tricks[@]} >/dev/null
for _ in $(seq 1 "$hogs"); do
    "$python" -c 'while True: pass' &
    pids+=($!)
done
failed=0
for i in $(seq 1 "$runs"); do
    status=0
    (cd "$work/p" && TMPDIR="$work" "$python" -m torch.distributed.run --standalone --nproc_per_node 2 \
        train.py --epochs 1 --out-dir "$work/run-$i" >"$work/log-$i" 2>&1) || status=$?
    if [ "$status" -eq 0 ]; then
        echo "run $i: ok"
    else
        failed=$((failed + 1))
        echo "run $i: FAILED (exit $status); its last lines:"
        tail -n 5 "$work/log-$i"
    fi
done
echo "$((runs - failed))/$runs runs of --ddp ${tricks[*]} exited cleanly beside $hogs CPU hog(s)"
[ "$failed" -eq 0 ]
