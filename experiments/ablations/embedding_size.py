"""Table 3 of the ALBERT paper: the factorized embedding size E, with all
layers shared and with none, at hidden size H.

base (H = 768): E in {64, 128, 256, 768}, the paper's values.
mini (H = 256): E in {64, 128, 256}: the paper's values below H, the last E = H.
tiny (H = 64):  E in {8, 16, 32, 64}: about the same fractions of H (1/8 to 1),
                the last E = H, no projection, as the paper's 768.

The paper finds E = 128 best for all-shared and a larger E better for
not-shared, in downstream accuracy; the report compares held-out MLM
accuracy, paired by seed, with the scale's second E standing for the paper's
128, and with a downstream task (launch.sweep --downstream) the same
comparisons on its dev accuracy.
"""

from albert_jax.sweep.variants import Comparison, Sweep, Variant, check_scale, downstream_twins

_EMBEDDING_SIZES = {'tiny': (8, 16, 32, 64), 'mini': (64, 128, 256), 'base': (64, 128, 256, 768)}
_SHARING = (('none', 'not-shared'), ('all', 'all-shared'))


def get_sweep(scale: str) -> Sweep:
  check_scale(scale)
  sizes = _EMBEDDING_SIZES[scale]
  variants = tuple(
    Variant(
      name=f'{sharing}-E{size}',
      group=f'ALBERT {scale} {label}',
      label=f'E={size}',
      overrides={'model.sharing': sharing, 'model.embedding_size': size},
    )
    for sharing, label in _SHARING
    for size in sizes
  )
  best = sizes[1]
  comparisons = [
    Comparison(f'all-E{best}', f'all-E{size}', 'mlm', 'Table 3: all-shared does best at E = 128')
    for size in sizes
    if size != best
  ]
  comparisons += [
    Comparison(
      f'none-E{larger}', f'none-E{smaller}', 'mlm', 'Table 3: not-shared gains from a larger E'
    )
    for smaller, larger in zip(sizes, sizes[1:])
  ]
  return Sweep(
    name='embedding_size',
    title='Table 3, the effect of vocabulary embedding size',
    preset=scale,
    variants=variants,
    comparisons=(*comparisons, *downstream_twins(comparisons)),
  )
