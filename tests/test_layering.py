"""The package's layering: every import of albert_jax/ points down or sideways.

A module may import modules of its own layer and of the layers below it,
never above, and never the repository's `experiments/` or `launch/` (which
sit above the package). Read by `ast`, nothing is imported.
"""

import ast
import os

import pytest

PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'albert_jax')

# Bottom to top. An entry names a module, or a package and all under it.
LAYERS = (
  (
    'albert_jax',
    'albert_jax.errors',
    'albert_jax.records',
    'albert_jax.config',
    'albert_jax.backend_defaults',
    'albert_jax.model',
    'albert_jax.flops',
    'albert_jax.param_count',
    'albert_jax.tree_paths',
    'albert_jax.hf',
  ),
  ('albert_jax.data',),
  ('albert_jax.pretrained',),  # Exported models: read and written.
  ('albert_jax.train',),  # The engine: mesh, state, steps, loop, checkpoints, workdirs.
  ('albert_jax.model_path',),  # Any model: an export, a Hugging Face directory, a workdir.
  # The trainers, which start from any model path.
  ('albert_jax.pretraining', 'albert_jax.finetune'),
  (
    'albert_jax.evaluate',
    'albert_jax.fill_mask',
    'albert_jax.benchmark',
    'albert_jax.hf_peer',
    'albert_jax.memory_plan',
    'albert_jax.sweep',
    'albert_jax.cluster',
  ),
)
OUTSIDE = ('experiments', 'launch')


def _layer(module: str) -> int | None:
  """The index in LAYERS of `module`, by its longest matching entry."""
  best, best_length = None, -1
  for index, entries in enumerate(LAYERS):
    for entry in entries:
      matches = module == entry or (entry != 'albert_jax' and module.startswith(entry + '.'))
      if matches and len(entry) > best_length:
        best, best_length = index, len(entry)
  return best


def _modules() -> dict[str, str]:
  """Module name -> file, for every module of the package."""
  found = {}
  root = os.path.dirname(PACKAGE)
  for directory, _, files in os.walk(PACKAGE):
    for name in files:
      if name.endswith('.py'):
        path = os.path.join(directory, name)
        parts = os.path.relpath(path, root)[: -len('.py')].split(os.sep)
        if parts[-1] == '__init__':
          parts = parts[:-1]
        found['.'.join(parts)] = path
  return found


MODULES = _modules()


def _imports(module: str, path: str) -> list[tuple[int, str]]:
  """(line, module) of every import in `path`, function-level ones too;
  `from P import N` counts as P.N when that is a module, else as P."""
  with open(path, encoding='utf-8') as f:
    tree = ast.parse(f.read(), path)
  is_package = path.endswith('__init__.py')
  found = []
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ''
      if node.level:  # Relative: from the module's package.
        package = module.split('.')
        package = package[: len(package) - node.level + is_package]
        base = '.'.join(package + ([base] if base else []))
      for alias in node.names:
        name = f'{base}.{alias.name}'
        found.append((node.lineno, name if name in MODULES else base))
  return found


def test_the_layer_table_places_every_module():
  assert len(MODULES) > 20  # The walk found the package.
  unplaced = sorted(m for m in MODULES if _layer(m) is None)
  assert not unplaced, f'add these modules to LAYERS: {unplaced}'


@pytest.mark.parametrize('module', sorted(MODULES))
def test_no_import_points_up_or_out_of_the_package(module):
  here = _layer(module)
  bad = []
  for line, imported in _imports(module, MODULES[module]):
    top = imported.split('.')[0]
    if top in OUTSIDE:
      bad.append(f'line {line}: {imported} (outside the package)')
    elif top == 'albert_jax' and here is not None:
      there = _layer(imported)
      if there is not None and there > here:
        bad.append(f'line {line}: {imported} (layer {there} > {here})')
  assert not bad, f'{MODULES[module]} imports upward: ' + '; '.join(bad)


def test_the_checker_sees_upward_and_outside_imports(tmp_path):
  path = tmp_path / 'module.py'
  path.write_text(
    'from albert_jax.train import mesh\ndef f():\n  from experiments.configs import pretrain\n'
  )
  assert _imports('albert_jax.data.module', str(path)) == [
    (1, 'albert_jax.train.mesh'),
    (3, 'experiments.configs'),
  ]
  assert _layer('albert_jax.train.mesh') > _layer('albert_jax.data.module')


def _import_graph() -> dict[str, set[str]]:
  """Module -> the package's modules it imports (function-level ones too)."""
  return {
    module: {imported for _, imported in _imports(module, path) if imported in MODULES} - {module}
    for module, path in MODULES.items()
  }


def _cycle(graph: dict[str, set[str]]) -> list[str]:
  """One import cycle of `graph` (its modules in order), [] when none."""
  done, stack = set(), []

  def visit(module: str) -> list[str]:
    if module in stack:
      return stack[stack.index(module) :] + [module]
    if module in done:
      return []
    stack.append(module)
    for imported in sorted(graph[module]):
      if found := visit(imported):
        return found
    stack.pop()
    done.add(module)
    return []

  for module in sorted(graph):
    if found := visit(module):
      return found
  return []


def test_no_module_imports_one_that_imports_it_back():
  cycle = _cycle(_import_graph())
  assert not cycle, 'import cycle: ' + ' -> '.join(cycle)


def test_the_cycle_finder_finds_a_cycle():
  assert _cycle({'a': {'b'}, 'b': {'c'}, 'c': {'a'}, 'd': set()}) == ['a', 'b', 'c', 'a']
  assert _cycle({'a': {'b'}, 'b': set()}) == []
