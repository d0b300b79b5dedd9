"""Table 4 of the ALBERT paper: cross-layer parameter sharing (all, attention
only, FFN only, none) at two embedding sizes E.

base (H = 768): E in {768, 128}, the paper's values.
tiny (H = 64):  E in {64, 32}: E = H, and the tiny preset's factorized E (H/2).
"""

from albert_jax.sweep.variants import Sweep, Variant, check_scale

_EMBEDDING_SIZES = {'tiny': (64, 32), 'base': (768, 128)}
_SHARING = (
  ('all', 'all-shared'),
  ('attention', 'shared-attention'),
  ('ffn', 'shared-FFN'),
  ('none', 'not-shared'),
)


def get_sweep(scale: str) -> Sweep:
  check_scale(scale)
  variants = tuple(
    Variant(
      name=f'E{size}-{sharing}',
      group=f'ALBERT {scale} E={size}',
      label=label,
      overrides={'model.embedding_size': size, 'model.sharing': sharing},
    )
    for size in _EMBEDDING_SIZES[scale]
    for sharing, label in _SHARING
  )
  return Sweep(
    name='sharing',
    title='Table 4, the effect of cross-layer parameter sharing',
    preset=scale,
    variants=variants,
  )
