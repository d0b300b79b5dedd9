"""Table 3 of the ALBERT paper: the factorized embedding size E, with all
layers shared and with none, at hidden size H.

base (H = 768): E in {64, 128, 256, 768}, the paper's values.
tiny (H = 64):  E in {8, 16, 32, 64}: about the same fractions of H (1/8 to 1),
                the last E = H, no projection, as the paper's 768.
"""

from albert_jax.sweep.variants import Sweep, Variant, check_scale

_EMBEDDING_SIZES = {'tiny': (8, 16, 32, 64), 'base': (64, 128, 256, 768)}
_SHARING = (('none', 'not-shared'), ('all', 'all-shared'))


def get_sweep(scale: str) -> Sweep:
  check_scale(scale)
  variants = tuple(
    Variant(
      name=f'{sharing}-E{size}',
      group=f'ALBERT {scale} {label}',
      label=f'E={size}',
      overrides={'model.sharing': sharing, 'model.embedding_size': size},
    )
    for sharing, label in _SHARING
    for size in _EMBEDDING_SIZES[scale]
  )
  return Sweep(
    name='embedding_size',
    title='Table 3, the effect of vocabulary embedding size',
    preset=scale,
    variants=variants,
  )
