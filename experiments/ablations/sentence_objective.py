"""Table 5 of the ALBERT paper: the sentence-prediction loss (none, NSP, SOP),
every model then evaluated on both NSP and SOP examples (launch.sweep does).

The model is the preset of `scale` (all-shared, factorized E) in every row.
"""

from albert_jax.sweep.variants import Sweep, Variant, check_scale

_OBJECTIVES = (('none', 'None'), ('nsp', 'NSP'), ('sop', 'SOP'))


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
  )
