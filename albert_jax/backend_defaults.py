"""Speed settings a config leaves at 0 ("auto"), chosen for the backend.

Each choice changes how the step is computed, never what: the params, the
update and the losses are the same (tests/test_backend_defaults.py). Each
rests on measurements on the reference machines, in
benchmarks/results/README.md; setting the key overrides it.
"""

import math

from albert_jax.config import ModelConfig

# Unrolling the layer loop into straight-line code (nn.scan's `unroll`; the
# params keep their scanned layout) lets XLA fuse and schedule across layers:
# the fastest step on CPUs and GPUs at every depth measured, but the program
# and its compile time grow with depth (CPU, base: 5.2 s at 12 layers, 11.6 s
# at 48). Deeper than this, a loop. On TPUs the loop is kept where layers are
# rematerialised, unrolled layers where not (not measured on a TPU; the TPU
# compiler's figures, docs/tpu.md: xxlarge on v5p-512 with full remat, the
# loop needs 4.3 GiB a chip against 10.1 unrolled; without remat, 34.5
# against 13.6, the loop stacking every layer's saved activations).
MAX_UNROLLED_LAYERS = 24

# On CPUs, micro-batches of at most this many tokens per device keep the
# step's temporaries (attention scores, FFN activations) in the caches, but
# of at least this many examples, or the matrix products get too small
# (base, batch 8, 2-core Xeon, s per step: seq 128, 1 / 2 / 4 micro-batches
# 3.23 / 2.74 / 2.87; seq 512, 2 / 4 / 8: 15.6 / 13.4 / 14.0). Narrower
# layers than base's take more tokens, by the square root of the width
# ratio: the default run's tiny model (H = 64, 2-core AMD Zen 4) is fastest
# at 1,024-2,048 tokens (pretraining, batch 16 x 128, 1 / 2 / 4
# micro-batches: 75.6 / 67.3 / 69.9 ms; fine-tuning, batch 32 of buckets up
# to 128, examples/s at 1 / 2 / 4 / 8: 517 / 554 / 534 / 448).
CPU_MICRO_BATCH_TOKENS = 512
CPU_MICRO_BATCH_WIDTH = 768
CPU_MICRO_BATCH_MIN_EXAMPLES = 2

# On TPUs, micro-batches of at most this many tokens per device: base's
# step at 8 x 512 per chip needs 2.70 GiB of a v5e's 16 (no remat, layers
# unrolled; the whole batch of 256 a chip does not compile, 201 GB);
# xxlarge's at 8 x 512 on v5p-512 (data 8 x fsdp 64) 13.6 GiB of 95
# (docs/tpu.md, the TPU compiler's figures).
TPU_MICRO_BATCH_TOKENS = 4096


def layer_unroll(model: ModelConfig, backend: str) -> int:
  """Layer applications per loop iteration: model.unroll, or for 0 the
  backend's choice (all of them, i.e. no loop, or 1)."""
  if model.unroll:
    return model.unroll
  depth, remat = model.num_layer_applications, model.remat_policy != 'none'
  return 1 if (backend == 'tpu' and remat) or depth > MAX_UNROLLED_LAYERS else depth


def grad_accum_steps(
  configured: int,
  *,
  examples_per_device: int,
  splits_into: int,
  tokens_per_example: int,
  hidden_size: int,
  backend: str,
) -> int:
  """Micro-batches per step: train.grad_accum_steps, or for 0 the backend's
  choice: the fewest micro-batches, a divisor of `splits_into` (the batch's
  equal shares per device and process), of at most a token budget per
  device. On CPUs CPU_MICRO_BATCH_TOKENS, more for layers narrower than
  CPU_MICRO_BATCH_WIDTH (but at least CPU_MICRO_BATCH_MIN_EXAMPLES
  examples); on TPUs TPU_MICRO_BATCH_TOKENS; elsewhere one micro-batch."""
  if configured:
    return configured
  if backend not in ('cpu', 'tpu') or splits_into < 1 or tokens_per_example < 1:
    return 1
  if backend == 'tpu':
    examples = max(1, TPU_MICRO_BATCH_TOKENS // tokens_per_example)
  else:
    widen = math.sqrt(max(1.0, CPU_MICRO_BATCH_WIDTH / max(1, hidden_size)))
    tokens = int(CPU_MICRO_BATCH_TOKENS * widen)
    examples = max(CPU_MICRO_BATCH_MIN_EXAMPLES, tokens // tokens_per_example)
  fitting = [k for k in _divisors(splits_into) if examples_per_device // k <= examples]
  return min(fitting, default=splits_into)


def _divisors(n: int) -> list[int]:
  small = [k for k in range(1, math.isqrt(n) + 1) if n % k == 0]
  return sorted(set(small + [n // k for k in small]))
