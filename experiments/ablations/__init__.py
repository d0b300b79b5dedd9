"""Ablation sweeps of the ALBERT paper, run by `python -m launch.sweep
--sweep=experiments/ablations/FILE.py:SCALE`: embedding_size (Table 3),
sharing (Table 4), sentence_objective (Table 5)."""
