"""Table 5 of the ALBERT paper: the sentence-prediction loss (none, NSP, SOP),
every model then evaluated on both NSP and SOP examples (launch.sweep does).

The model is the preset of `scale` (all-shared, factorized E) in every row.
The untrained sentence head of the 'none' model is the chance baseline of the
comparisons, on the same examples. With a downstream task (launch.sweep
--downstream), SOP is compared with NSP and with none on its dev accuracy:
the paper's average over its five downstream tasks puts SOP ahead of both.
"""

from albert_jax.sweep.variants import Comparison, Sweep, Variant, check_scale

_OBJECTIVES = (('none', 'None'), ('nsp', 'NSP'), ('sop', 'SOP'))
_COMPARISONS = (
  Comparison('nsp', 'none', 'nsp', 'Table 5: NSP learns NSP (90.5 vs 52.4 %)'),
  Comparison('sop', 'none', 'sop', 'Table 5: SOP learns SOP (86.5 vs 53.3 %)'),
  Comparison('sop', 'nsp', 'sop', 'Table 5: NSP training leaves SOP at chance (86.5 vs 52.0 %)'),
  Comparison('sop', 'none', 'nsp', 'Table 5: SOP training solves NSP well (78.9 vs 52.4 %)'),
  Comparison(
    'sop', 'nsp', 'mlm', 'Table 5: MLM no worse with SOP than NSP (54.0 vs 54.5 %)', margin=0.01
  ),
  Comparison(
    'sop', 'nsp', 'downstream', 'Table 5: SOP ahead of NSP downstream (avg. 80.1 vs 79.2)'
  ),
  Comparison(
    'sop', 'none', 'downstream', 'Table 5: SOP ahead of none downstream (avg. 80.1 vs 79.0)'
  ),
)


def get_sweep(scale: str) -> Sweep:
  check_scale(scale)
  variants = tuple(
    Variant(
      name=objective,
      group=f'ALBERT {scale}',
      label=label,
      overrides={'data.sentence_objective': objective},
    )
    for objective, label in _OBJECTIVES
  )
  return Sweep(
    name='sentence_objective',
    title='Table 5, the effect of sentence-prediction loss',
    preset=scale,
    variants=variants,
    comparisons=_COMPARISONS,
  )
