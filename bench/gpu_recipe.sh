#!/usr/bin/env bash
# bench/gpu_recipe.py on the lent GPU machine (docs/gpu.md): join the carried Inception parts, run the
# recipe outside the work tree (every device call lays the tree anew), and copy OUT/results to $OUT
# even when the recipe fails or runs out of time.
#   CARRY=/root/carry BUDGET=9 bash bench/gpu_recipe.sh [extra gpu_recipe.py options]
set -uo pipefail
CARRY=${CARRY:-/root/carry}          # where earlier calls copied the packed npz and inception.part-*
RUN=${RUN:-/root/gpu}                # the recipe's --out (kept while the machine stays warm)
BUDGET=${BUDGET:-9}
PY=${PYTHON:-python}
if [ ! -f /root/default_1.pt ]; then
  cat "$CARRY"/inception.part-* > /root/default_1.pt || exit 2
fi
# the recipe checks the sha1 itself; the outer timeout leaves a minute for start-up and the copy back
timeout $(( ${BUDGET%.*} * 60 + 60 )) "$PY" bench/gpu_recipe.py --data "$CARRY/cifar10-train-jpeg-packed.npz" \
  --inception /root/default_1.pt --out "$RUN" --budget-minutes "$BUDGET" "$@"
code=$?
if [ -n "${OUT:-}" ] && [ -d "$RUN/results" ]; then
  mkdir -p "$OUT/gpu-recipe" && cp -r "$RUN/results/." "$OUT/gpu-recipe/"
fi
exit $code
