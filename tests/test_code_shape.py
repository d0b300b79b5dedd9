"""The shape of the training code: short functions a newcomer can follow."""

import ast
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAX_LINES = 60  # Signature, docstring and body.


def test_no_long_functions_in_the_trainers():
  long = []
  for package in ('albert_jax/train', 'albert_jax/finetune'):
    for path in sorted((ROOT / package).glob('*.py')):
      for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
          lines = node.end_lineno - node.lineno + 1
          if lines > MAX_LINES:
            long.append(f'{path.relative_to(ROOT)}:{node.lineno} {node.name} ({lines} lines)')
  assert not long, long


def test_trainers_assemble_their_run_in_one_place():
  """Pretraining, fine-tuning, benchmark and evaluation call run.assemble;
  none builds its own optimizer, initial state or jitted step."""
  for name in ('pretraining.py', 'finetune/trainer.py', 'benchmark.py', 'evaluate.py'):
    source = (ROOT / 'albert_jax' / name).read_text()
    assert 'run_lib.assemble(' in source, name
    for private in ('optimizer_and_schedule', 'initial_state(', 'jax.jit(functools'):
      assert private not in source, (name, private)
