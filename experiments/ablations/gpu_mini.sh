#!/usr/bin/env bash
# Runs the paper's three ablations at the mini scale (Tables 3, 4 and 5, three
# seeds each) on one GPU, several runs at a time, then writes their reports.
#
#   bash experiments/ablations/gpu_mini.sh PREPARED_DIR OUT_DIR [--config.KEY=VALUE ...]
#   SEEDS=0,1,2,3,4 PARALLEL=12 bash experiments/ablations/gpu_mini.sh ...
#
# PREPARED_DIR is a corpus made by launch.prepare_data: the Debian corpus of
# experiments/corpora/ is 14 MB, small enough to travel to a lent machine.
# Each sweep goes to OUT_DIR/SWEEP (results.csv, results.md, plots); rerunning
# skips finished runs and resumes the others, as launch.sweep does; config
# overrides apply to every run of every sweep. PARALLEL runs train at a time
# (launch.sweep --parallel): a mini run is far too small to fill an H200 alone.
# SCALE=tiny runs the same on any machine, e.g. to check the script on a CPU.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [[ $# -lt 2 ]]; then
  echo "usage: $0 PREPARED_DIR OUT_DIR [--config.KEY=VALUE ...]" >&2
  exit 2
fi
PREPARED="$(realpath "$1")"
OUT="$(realpath -m "$2")"
shift 2
SCALE="${SCALE:-mini}"
SEEDS="${SEEDS:-0,1,2}"
PARALLEL="${PARALLEL:-8}"
PYTHON="${PYTHON:-python3}"

"${PYTHON}" -c 'import jax; print(f"{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}")'
mkdir -p "${OUT}"
start=$(date +%s)
for sweep in embedding_size sharing sentence_objective; do
  log="${OUT}/${sweep}.log"
  longer=()
  if [[ ${sweep} == sentence_objective && ${SCALE} == mini ]]; then
    # A mini model learns SOP on held-out text only after about 3,000 steps
    # (experiments/results/README.md): Table 5 trains 4,000.
    longer=(--config.train.num_steps=4000 --config.train.eval_every=500)
  fi
  "${PYTHON}" -m launch.sweep --sweep="experiments/ablations/${sweep}.py:${SCALE}" \
    --workdir="${OUT}/${sweep}" --seeds="${SEEDS}" --parallel="${PARALLEL}" \
    --config.data.source="prepared:${PREPARED}" "${longer[@]}" "$@" > "${log}" 2>&1 \
    || { tail -n 20 "${log}" >&2; exit 1; }
  echo "${sweep}: $(tail -n 1 "${log}") after $(( $(date +%s) - start )) s; ${OUT}/${sweep}/results.md"
done
