"""Ablation sweeps: variants of one pretraining config, each run in its own
sub-workdir by `launch.pretrain`, evaluated, and tabulated like the paper.

  variants.py  what a sweep file (experiments/ablations/*.py) returns
  plan.py      the runs of a sweep (variants x seeds), their commands, sweep.json
  runner.py    runs a plan locally: skip finished runs, resume the others
  results.py   one finished run: params, held-out MLM / NSP / SOP, speed
  stats.py     paired differences: Student-t over seeds, Holm, verdicts
  report.py    results.csv, results.md and the plots of a sweep directory
  emit.py      the plan as shell, SLURM or Cloud TPU launch commands
"""
