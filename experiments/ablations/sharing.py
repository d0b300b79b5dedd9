"""Table 4 of the ALBERT paper: cross-layer parameter sharing (all, attention
only, FFN only, none) at two embedding sizes E.

base (H = 768): E in {768, 128}, the paper's values.
mini (H = 256): E in {256, 128}: E = H, and the paper's factorized E.
tiny (H = 64):  E in {64, 32}: E = H, and the tiny preset's factorized E (H/2).

The paper compares downstream accuracy; the report compares held-out MLM
accuracy, paired by seed, and with a downstream task (launch.sweep
--downstream) the same comparisons on its dev accuracy.
"""

from albert_jax.sweep.variants import Comparison, Sweep, Variant, check_scale, downstream_twins

_EMBEDDING_SIZES = {'tiny': (64, 32), 'mini': (256, 128), 'base': (768, 128)}
_SHARING = (
  ('all', 'all-shared'),
  ('attention', 'shared-attention'),
  ('ffn', 'shared-FFN'),
  ('none', 'not-shared'),
)


def get_sweep(scale: str) -> Sweep:
  check_scale(scale)
  sizes = _EMBEDDING_SIZES[scale]
  variants = tuple(
    Variant(
      name=f'E{size}-{sharing}',
      group=f'ALBERT {scale} E={size}',
      label=label,
      overrides={'model.embedding_size': size, 'model.sharing': sharing},
    )
    for size in sizes
    for sharing, label in _SHARING
  )
  comparisons = []
  for size in sizes:
    comparisons += [
      Comparison(
        f'E{size}-none',
        f'E{size}-all',
        'mlm',
        'Table 4: not-shared ahead of all-shared at equal steps',
      ),
      Comparison(
        f'E{size}-attention',
        f'E{size}-ffn',
        'mlm',
        'Table 4: sharing attention costs less than sharing the FFN',
      ),
    ]
  return Sweep(
    name='sharing',
    title='Table 4, the effect of cross-layer parameter sharing',
    preset=scale,
    variants=variants,
    comparisons=(*comparisons, *downstream_twins(comparisons)),
  )
