#!/usr/bin/env bash
# Benchmarks ALBERT-base and -large pretraining steps on one GPU, seq 512, bf16.
#
#   bash benchmarks/gpu.sh                 # batch 64 per step
#   BATCH_SIZE=128 STEPS=20 bash benchmarks/gpu.sh
#
# Needs a CUDA build of JAX (pip install -r requirements.txt "jax[cuda12]==0.10.2",
# or the pre-fetched wheels of the machine). Prints one JSON line per run and
# a summary with MFU against the table of albert_jax/train/metrics.py (dense
# bf16 peak; override with --config.train.peak_flops_per_device=FLOPS).
set -euo pipefail
cd "$(dirname "$0")/.."

BATCH_SIZE="${BATCH_SIZE:-64}"
SEQ_LEN="${SEQ_LEN:-512}"
STEPS="${STEPS:-10}"
ROUNDS="${ROUNDS:-3}"
OUT="${OUT:-$(mktemp -d)}"
PYTHON="${PYTHON:-python3}"

"${PYTHON}" - <<'EOF'
import sys
import jax
if jax.default_backend() != 'gpu':
  sys.exit(f'error: JAX sees no GPU (backend {jax.default_backend()!r}); '
           'install a CUDA build: pip install "jax[cuda12]==0.10.2"')
print(f'{jax.device_count()} x {jax.devices()[0].device_kind}, jax {jax.__version__}')
EOF

# Latency-hiding scheduler: overlaps collectives with compute on several
# GPUs (harmless on one). Triton GEMM fusions are on by default.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_gpu_enable_latency_hiding_scheduler=true"
# Let XLA take the memory it needs up front rather than grow.
export XLA_PYTHON_CLIENT_MEM_FRACTION="${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}"

# (remat policy, unroll): a loop of one layer (unroll=1) compiles once per
# model; the default (0: unrolled at these depths) lets XLA fuse across
# layers, faster on GPUs.
for preset in base large; do
  for variant in none:1 dots_with_no_batch_dims_saveable:1 none:0 \
                 dots_with_no_batch_dims_saveable:0; do
    remat="${variant%:*}"
    unroll="${variant#*:}"
    "${PYTHON}" -m launch.benchmark \
      --config="experiments/configs/pretrain.py:${preset}" \
      --batch_size="${BATCH_SIZE}" --max_seq_length="${SEQ_LEN}" \
      --steps="${STEPS}" --rounds="${ROUNDS}" \
      --config.model.dtype=bfloat16 \
      --config.model.remat_policy="${remat}" \
      --config.model.unroll="${unroll}" \
      --json | tee "${OUT}/${preset}_${remat}_unroll${unroll}.json"
  done
done

"${PYTHON}" - "${OUT}" <<'EOF'
import glob, json, os, sys
print(f'\n| preset | remat | layers | batch x seq | step (ms) | tokens/s | MFU | '
      f'cuDNN attention kernels | compile (s) | memory (GiB) |')
print('|---|---|---|---|---:|---:|---:|---:|---:|---:|')
for path in sorted(glob.glob(os.path.join(sys.argv[1], '*.json'))):
  r = json.load(open(path))
  mfu = f'{r["mfu"]:.1%}' if r['mfu'] is not None else 'n/a'
  memory = r['device_peak_bytes'] or r['memory_per_device_bytes']
  layers = 'loop' if r['unroll'] == 1 else 'unrolled'
  print(f'| {r["preset"]} | {r["remat_policy"]} | {layers} | '
        f'{r["batch_size"]} x {r["seq_len"]} | {r["step_time_s"] * 1e3:.1f} | '
        f'{r["tokens_per_sec"]:,.0f} | {mfu} | {r["fused_attention_calls"]} | '
        f'{r["compile_s"]:.1f} | {memory / 2**30:.1f} |')
EOF
