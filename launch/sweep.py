r"""Ablation sweeps: each variant of a sweep file trained by launch.pretrain in
its own sub-workdir, evaluated on held-out NSP and SOP examples, tabulated.

  python -m launch.sweep --sweep=experiments/ablations/sharing.py:tiny \
      --workdir=runs/sharing --config.train.num_steps=1200 --seeds=0,1
  python -m launch.sweep --report=runs/sharing        # rebuild the report
  python -m launch.sweep --sweep=experiments/ablations/sharing.py:tiny \
      --workdir=runs/sharing --seeds=0,1,2 --only=E64-all,E64-none
  python -m launch.sweep --sweep=experiments/ablations/sharing.py:mini \
      --workdir=runs/sharing --seeds=0,1,2 --parallel=8   # 8 runs share a GPU
  python -m launch.sweep --sweep=experiments/ablations/sharing.py:base \
      --workdir=/shared/sharing --emit=slurm --nodes=4 > submit.sh
  python -m launch.sweep --sweep=experiments/ablations/sentence_objective.py:mini \
      --workdir=runs/sentence --seeds=0,1,2 \
      --downstream=rt2k/train.tsv,rt2k/dev.tsv --downstream_config=train.num_epochs=3

--config.KEY=VALUE applies to every run; --only=VARIANT,... runs or emits
those variants' runs (the report lists the whole sweep, marking the variants
no --only chose as not run). Rerunning skips finished runs and resumes the
others; a failed run is reported and the others still run. Writes
DIR/results.csv, results.md (with the paired comparisons of the paper's
findings), mlm_accuracy.png, params.png and sentence_accuracy.png (when runs
train a sentence objective); docs/sweeps.md is the manual.

--downstream=TRAIN,DEV fine-tunes every finished run (every variant, every
seed) with `launch.finetune --task=classification` (the preset of
experiments/configs/finetune.py, its keys overridden by each
--downstream_config=KEY=VALUE, the run's seed as the fine-tuning's) in
DIR/RUN/downstream, scores each dev example (RUN/downstream_outcomes.npz,
with example ids), and reports the dev accuracy as a column and in the
paper's comparisons with the same intervals and Holm correction. A run
fine-tuned before is skipped; a failed fine-tuning is reported and the others
go on. The sweep directory keeps its downstream task: later invocations and
--report (which fine-tunes finished runs that lack it, e.g. after --emit)
use it without the flag.
"""

import dataclasses
import os
import sys

from absl import flags

from albert_jax.errors import SweepError
from albert_jax.sweep import emit, report, runner, variants
from albert_jax.sweep import plan as plan_lib
from launch import command_line

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The runs' presets, relative to _REPO, where the runs start.
_CONFIG_FILE = 'experiments/configs/pretrain.py'
_PRETRAIN = [sys.executable, '-m', 'launch.pretrain']
_FINETUNE = [sys.executable, '-m', 'launch.finetune']

_SWEEP = flags.DEFINE_string(
  'sweep', None, 'FILE:SCALE, e.g. experiments/ablations/sharing.py:tiny.'
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Sweep directory: DIR/RUN per run.')
_SEEDS = flags.DEFINE_list(
  'seeds', [], "Each variant once per seed (sets train.seed and data.seed); default: the config's."
)
_EVAL_BATCHES = flags.DEFINE_integer(
  'eval_batches',
  0,
  "Batches per objective of the final evaluation; 0: the run's train.eval_steps.",
)
_ONLY = flags.DEFINE_list('only', [], 'Run or emit only these variants (default: all).')
_PARALLEL = flags.DEFINE_integer(
  'parallel', 1, 'Runs training at a time on this machine (small runs sharing an accelerator).'
)
_EMIT = flags.DEFINE_enum(
  'emit', None, emit.TARGETS, 'Print a bash script of launch commands instead of running.'
)
_REPORT = flags.DEFINE_string(
  'report', None, 'Rebuild the report of DIR (evaluating finished runs without a result).'
)
_DOWNSTREAM = flags.DEFINE_list(
  'downstream',
  [],
  'TRAIN,DEV: a classification task (.tsv / .csv with a header, or tfds:NAME) to fine-tune '
  'every run on and report the dev accuracy of.',
)
_DOWNSTREAM_CONFIG = flags.DEFINE_multi_string(
  'downstream_config',
  [],
  'KEY=VALUE: a fine-tuning config override (of the classification preset), repeatable.',
)
_NODES = flags.DEFINE_integer('nodes', 1, 'slurm: nodes per run.')
_GPUS = flags.DEFINE_integer('gpus_per_node', 8, 'slurm: GPUs per node.')
_TIME = flags.DEFINE_string('time', '24:00:00', 'slurm: time limit per run.')
_PARTITION = flags.DEFINE_string('partition', None, 'slurm: partition.')
_TPU = flags.DEFINE_string('tpu', None, 'tpu: TPU VM name.')
_ZONE = flags.DEFINE_string('zone', None, 'tpu: its zone.')


def main(argv: list[str]) -> int:
  del argv  # Flags only.
  return _main()


def _main() -> int:
  if _REPORT.value:
    return _report(os.path.abspath(_REPORT.value))
  if not _SWEEP.value or not _WORKDIR.value:
    raise SweepError('pass --sweep=FILE:SCALE and --workdir=DIR (or --report=DIR)')
  if not all(seed.isdigit() for seed in _SEEDS.value):
    raise SweepError(f'--seeds={",".join(_SEEDS.value)}: give integers, e.g. 0,1,2')
  overrides = [a for a in sys.argv[1:] if a.startswith('--config.')]
  whole = plan_lib.make_plan(
    variants.load_sweep(_SWEEP.value),
    _SWEEP.value,
    overrides,
    [int(s) for s in _SEEDS.value],
    config_file=_CONFIG_FILE,
    downstream=_downstream(),
  )
  plan = whole.only(_ONLY.value)
  if _EMIT.value:
    script = emit.emit(
      plan,
      _WORKDIR.value,
      _EMIT.value,
      emit.Cluster(
        _NODES.value, _GPUS.value, _TIME.value, _PARTITION.value, _TPU.value, _ZONE.value
      ),
      eval_batches=_EVAL_BATCHES.value,
    )
    whole.save(_WORKDIR.value, only=_ONLY.value)  # For --report.
    print(script, end='')
    return 0
  return _run(whole, plan)


def _run(whole: plan_lib.Plan, plan: plan_lib.Plan) -> int:
  """Runs `plan` (part of the sweep `whole`) here, then writes the report;
  the exit status: 1 when a run or its fine-tuning did not finish."""
  root = os.path.abspath(_WORKDIR.value)
  whole = whole.save(root, only=_ONLY.value)  # With the selections so far, for the report.
  # The saved task: one given before holds when the flag is left out.
  plan = dataclasses.replace(plan, downstream=whole.downstream)
  if _PARALLEL.value > 1:
    # Each process takes the accelerator memory it uses, not 75 % of it.
    os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
  outcomes = runner.run_plan(
    plan,
    root,
    flags.FLAGS.config,
    pretrain=_PRETRAIN,
    finetune=_FINETUNE,
    cwd=_REPO,
    eval_batches=_EVAL_BATCHES.value,
    parallel=_PARALLEL.value,
  )
  if report.collect(whole, root):
    print('\n'.join(report.write_report(whole, root)))
  bad = [o for o in outcomes if o.status in ('failed', 'stopped')]
  print(
    f'{len(outcomes) - len(bad)} of {len(plan.runs)} runs finished'
    + ''.join(f'\n  {o.run} {o.status}: {o.message}' for o in bad)
  )
  unscored = _print_unscored(outcomes)
  return 1 if bad or unscored or len(outcomes) < len(plan.runs) else 0


def _report(root: str) -> int:
  """--report: evaluates and fine-tunes the finished runs that lack it, then
  rewrites the report; 1 when a fine-tuning failed."""
  plan = plan_lib.load_plan(root)
  runner.evaluate_unevaluated(plan, root, eval_batches=_EVAL_BATCHES.value)
  outcomes = runner.finetune_unfinetuned(plan, root, finetune=_FINETUNE, cwd=_REPO)
  print('\n'.join(report.write_report(plan, root)))
  return 1 if _print_unscored(outcomes) else 0


def _print_unscored(outcomes: list[runner.Outcome]) -> int:
  """Prints the runs whose fine-tuning failed or stopped; returns how many."""
  unscored = [o for o in outcomes if o.downstream in ('failed', 'stopped')]
  if unscored:
    print(
      f'{len(unscored)} run{"s" * (len(unscored) > 1)} not fine-tuned'
      + ''.join(f'\n  {o.run} fine-tuning {o.downstream}: {o.downstream_message}' for o in unscored)
    )
  return len(unscored)


def _downstream() -> plan_lib.Downstream | None:
  """The task of --downstream and --downstream_config (paths made absolute:
  the fine-tuning runs start in the repository root); None without it."""
  if not _DOWNSTREAM.value:
    if _DOWNSTREAM_CONFIG.value:
      raise SweepError('--downstream_config needs --downstream=TRAIN,DEV')
    return None
  if len(_DOWNSTREAM.value) != 2:
    raise SweepError(
      f'--downstream={",".join(_DOWNSTREAM.value)}: give TRAIN,DEV, e.g. train.tsv,dev.tsv'
    )
  paths = []
  for path in _DOWNSTREAM.value:
    if not path.startswith('tfds:'):
      if not os.path.isfile(path):
        raise SweepError(f'--downstream: no file {path!r}: give TRAIN,DEV, e.g. train.tsv,dev.tsv')
      path = os.path.abspath(path)
    paths.append(path)
  return plan_lib.Downstream(*paths, overrides=tuple(_DOWNSTREAM_CONFIG.value))


def _default_config(argv: list[str]) -> str | None:
  """The preset of --sweep, read before the flags are parsed: the overrides
  --config.KEY=VALUE are checked against it."""
  if command_line.flag_value(argv, 'config') is not None:
    raise SweepError(
      'the sweep file picks the preset: drop --config= and pass overrides as --config.KEY=VALUE'
    )
  spec = command_line.flag_value(argv, 'sweep')
  if spec is None:
    return None
  return os.path.join(_REPO, _CONFIG_FILE) + ':' + variants.load_sweep(spec).preset


if __name__ == '__main__':
  command_line.run(
    main,
    config=command_line.Config(
      _default_config,
      keys_file=_CONFIG_FILE,
      help_text='Set by --sweep (its preset); pass overrides only.',
    ),
  )
