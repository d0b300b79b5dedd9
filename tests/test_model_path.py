"""model_path.load: every kind of model path detected from its files, and one
line for anything else."""

import os
import shutil

import jax
import numpy as np
import pytest

from albert_jax import model_path
from albert_jax import pretrained as pretrained_lib
from albert_jax.errors import ExportError, UsageError

import export_testing


def _assert_same_params(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b)


@pytest.fixture(scope='module')
def run():
  return export_testing.pretrained_run()[0]


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
  """A Hugging Face cache holding the hf export as org/tiny-albert
  (models--org--tiny-albert/snapshots/REV, refs/main naming REV)."""
  cache = tmp_path / 'hub'
  repo = cache / 'models--org--tiny-albert'
  shutil.copytree(export_testing.exported('hf'), repo / 'snapshots' / 'a1b2c3')
  (repo / 'refs').mkdir()
  (repo / 'refs' / 'main').write_text('a1b2c3')
  monkeypatch.setenv('HF_HUB_CACHE', str(cache))
  return str(cache)


def test_exports_and_pretraining_runs(run):
  flax = model_path.load(export_testing.exported('flax'))
  assert (flax.kind, flax.step, flax.pretrained.head) == ('flax', None, None)
  assert flax.description == f'the flax model {export_testing.exported("flax")}'
  hf = model_path.load(export_testing.exported('hf'))
  assert hf.kind == 'hf' and hf.pretrained.initialised == ()
  _assert_same_params(hf.pretrained.params, flax.pretrained.params)

  latest = model_path.load(run)
  assert (latest.kind, latest.step) == ('pretraining_run', 400)
  assert latest.description == f'step 400 of {run} (pretraining run)'
  _assert_same_params(latest.pretrained.params, flax.pretrained.params)
  earlier = model_path.load(run, step=200)
  assert earlier.step == 200
  _assert_same_params(earlier.pretrained.params, model_path.restore_run(run, 200).pretrained.params)


def test_a_finetuning_run_is_its_backbone_and_head():
  workdir = export_testing.finetuned('classification')
  loaded = model_path.load(workdir)
  assert (loaded.kind, loaded.step) == ('finetuning_run', 30)
  assert loaded.description == f'step 30 of {workdir} (fine-tuning run, classification)'
  head = loaded.pretrained.head
  assert (head.task, head.labels) == ('classification', ('animal', 'thing'))
  assert head.params['classifier']['kernel'].shape == (48, 2)
  # The pretraining heads are not in a fine-tuning checkpoint.
  assert set(loaded.pretrained.initialised) == {'predictions', 'sop_classifier'}
  assert loaded.run_config['task'] == 'classification'


def test_a_hub_id_in_the_local_cache(hub_cache):
  loaded = model_path.load('org/tiny-albert')
  assert loaded.kind == 'hf_cache'
  snapshot = os.path.join(hub_cache, 'models--org--tiny-albert', 'snapshots', 'a1b2c3')
  assert loaded.description == f'the Hugging Face model org/tiny-albert (local cache {snapshot})'
  _assert_same_params(
    loaded.pretrained.params, model_path.load(export_testing.exported('hf')).pretrained.params
  )
  with pytest.raises(ExportError) as error:
    model_path.load('org/missing-albert')
  assert str(error.value) == (
    'org/missing-albert is neither a local directory nor a model in the Hugging Face cache '
    f'({hub_cache}): pass a model directory or workdir, or download it first '
    '(huggingface-cli download org/missing-albert)'
  )


def test_a_launcher_takes_a_cached_hub_id(hub_cache):
  env = {'HF_HUB_CACHE': hub_cache, 'HF_HUB_OFFLINE': '1'}
  result = export_testing.launch(
    'fill_mask', '--model=org/tiny-albert', 'dogs dogs [MASK] dogs.', env=env
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.splitlines()[1].startswith("  [MASK] 1: 'dogs' 0.")
  export_testing.assert_one_line_error(
    export_testing.launch('fill_mask', '--model=org/nothing', '[MASK]', env=env),
    'org/nothing is neither a local directory nor a model in the Hugging Face cache',
  )


def test_anything_else_is_one_line(tmp_path, run):
  (tmp_path / 'notes.txt').write_text('hello')
  (tmp_path / 'config.json').write_text('{"model_type": "albert"}')
  cases = [
    (str(tmp_path), f'{tmp_path} holds no model: .*; found config.json, notes.txt'),
    (str(tmp_path / 'notes.txt'), 'is a file: pass a model directory'),
    (str(tmp_path / 'missing'), 'is neither a local directory nor a model in the Hugging Face'),
    ('../a/b/c', 'is neither a local directory nor a model in the Hugging Face'),
  ]
  for path, pattern in cases:
    with pytest.raises(ExportError, match=pattern) as error:
      model_path.load(path)
    assert '\n' not in str(error.value)
  with pytest.raises(ExportError, match='has no checkpoint at step 7: choose one of 200, 400'):
    model_path.load(run, step=7)
  with pytest.raises(UsageError, match='--step chooses a checkpoint of a training workdir'):
    model_path.load(export_testing.exported('flax'), step=400)

  # A run that never checkpointed, and a fine-tuning run without its model record.
  empty = tmp_path / 'empty_run'
  (empty / 'checkpoints').mkdir(parents=True)
  shutil.copy(os.path.join(run, 'config.json'), empty)
  with pytest.raises(ExportError, match='holds no checkpoint yet'):
    model_path.load(str(empty))
  finetuned = str(tmp_path / 'finetuned')
  shutil.copytree(export_testing.finetuned('classification'), finetuned)
  shutil.rmtree(os.path.join(finetuned, 'model'))
  with pytest.raises(ExportError, match='is a fine-tuning run without model/'):
    model_path.load(finetuned)
  assert pretrained_lib.is_hf(export_testing.exported('hf'))
