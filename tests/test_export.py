"""Export (flax, Hugging Face), import from Hugging Face, init_from.

The shared tiny run (export_testing) goes out through `launch.export` and
comes back: transformers loads the hf export as it is and computes the JAX
model's outputs; importing that directory gives the trained params bit for
bit.
"""

import dataclasses
import json
import os
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
import safetensors.numpy
import torch
import transformers

from albert_jax import model_path, pretraining
from albert_jax import pretrained as pretrained_lib
from albert_jax.data import vocabulary
from albert_jax.errors import ExportError
from albert_jax.fill_mask import encode_with_masks
from albert_jax.model import AlbertForPreTraining
from albert_jax.param_count import param_shapes
from albert_jax.train import checkpoint as checkpoint_lib
from albert_jax.train import mesh as mesh_lib
from albert_jax.train.config import PretrainConfig

import export_testing

# float32 noise of two implementations summing in different orders: the
# trained logits reach |5|, where 1e-5 is some 20 ulps.
TOL = dict(atol=1e-5, rtol=1e-5)


@pytest.fixture(scope='module')
def run():
  return export_testing.pretrained_run()[0]


def _assert_same_params(got, expected):
  assert jax.tree.structure(got) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    assert a.dtype == b.dtype and np.array_equal(a, b)


def test_hf_export_loads_in_transformers_and_imports_back_exactly(run, tmp_path):
  hf_dir, flax_dir = str(tmp_path / 'hf'), str(tmp_path / 'flax')
  result = export_testing.launch('export', f'--model={run}', '--format=hf', f'--output={hf_dir}')
  assert result.returncode == 0, result.stderr
  # The latest checkpoint, named in one line.
  assert result.stdout.strip() == f'wrote step 400 of {run} (pretraining run) to {hf_dir} (hf)'
  model = transformers.AlbertForPreTraining.from_pretrained(hf_dir).eval()
  tokenizer = transformers.AlbertTokenizer.from_pretrained(hf_dir)
  ours = model_path.restore_run(run).pretrained

  # The same ids from both tokenizers, [MASK] included.
  for text in ('Dogs  DOGS [MASK] dogs.', '猫 猫 [MASK]。', 'honey bees.'):
    assert tokenizer(text)['input_ids'] == [2, *encode_with_masks(ours.tokenizer, text), 3]
  # A padded batch of pairs: the same logits at every position.
  batch = tokenizer(
    ['cats cats cats.', 'honey 鱼 [MASK] birds'],
    ['mice mice.', '老师 汉字'],
    padding=True,
    return_token_type_ids=True,
    return_tensors='np',
  )
  assert batch['attention_mask'].min() == 0  # Padding is exercised.
  with torch.no_grad():
    theirs = model(**{k: torch.from_numpy(v) for k, v in batch.items()})
  jax_out = AlbertForPreTraining(ours.config).apply(
    {'params': ours.params}, batch['input_ids'], batch['attention_mask'], batch['token_type_ids']
  )
  np.testing.assert_allclose(jax_out['mlm_logits'], theirs.prediction_logits.numpy(), **TOL)
  np.testing.assert_allclose(jax_out['sentence_logits'], theirs.sop_logits.numpy(), **TOL)

  # --from_hf, the flag's earlier name, still works, with a one-line notice.
  result = export_testing.launch('export', f'--from_hf={hf_dir}', f'--output={flax_dir}')
  assert result.returncode == 0, result.stderr
  assert result.stderr.strip() == 'warning: --from_hf is deprecated; use --model'
  assert result.stdout.strip() == f'wrote the Hugging Face model {hf_dir} to {flax_dir} (flax)'
  imported = pretrained_lib.load_flax(flax_dir)
  assert imported.config == ours.config
  assert imported.tokenizer.fingerprint == ours.tokenizer.fingerprint
  _assert_same_params(imported.params, ours.params)

  # Resaved by transformers 5 (tokenizer.json only, no spiece.model), the
  # directory imports to the same params and the same ids.
  resaved = str(tmp_path / 'resaved')
  model.save_pretrained(resaved)
  transformers.AutoTokenizer.from_pretrained(hf_dir).save_pretrained(resaved)
  assert not os.path.exists(os.path.join(resaved, 'spiece.model'))
  again = pretrained_lib.load_hf(resaved)
  assert again.tokenizer.kind == 'tokenizer.json' and again.initialised == ()
  _assert_same_params(again.params, ours.params)
  for text in ('Dogs  DOGS dogs.', '猫 猫 鱼。', 'honey bees.'):
    assert again.tokenizer.encode(text) == ours.tokenizer.encode(text)


def test_flax_export_holds_params_only_in_the_chosen_dtype(run, tmp_path):
  out = str(tmp_path / 'flax')
  result = export_testing.launch(
    'export', f'--model={run}', '--step=200', '--dtype=bfloat16', f'--output={out}'
  )
  assert result.returncode == 0, result.stderr
  assert result.stdout.strip() == f'wrote step 200 of {run} (pretraining run) to {out} (flax)'
  assert sorted(os.listdir(out)) == [
    'model_config.json',
    'normalization.json',
    'params.safetensors',
    'spiece.model',
  ]
  names = set(safetensors.numpy.load_file(os.path.join(out, 'params.safetensors')))
  assert 'albert/encoder/layer/ffn/dense/kernel' in names
  assert not any('opt_state' in n or n.startswith('params/') for n in names)
  loaded = pretrained_lib.load_flax(out)
  assert loaded.config.param_dtype == 'bfloat16'
  step_200 = ocp.StandardCheckpointer().restore(os.path.join(run, 'checkpoints', '200', 'state'))[
    'params'
  ]
  _assert_same_params(
    loaded.params,
    jax.tree.map(lambda x: np.asarray(x).astype(loaded.config.params_dtype), step_200),
  )


def test_a_run_restores_its_checkpoint_params_step_and_config(run):
  restored = model_path.restore_run(run, step=200)
  assert restored.step == 200
  assert restored.run_config.train.num_steps == export_testing.NUM_STEPS
  # config.json's lists are the rules' tuples again.
  assert restored.run_config.sharding_rules == mesh_lib.DEFAULT_RULES
  checkpoints = os.path.join(run, checkpoint_lib.WORKDIR_SUBDIR)
  assert checkpoint_lib.checkpoint_steps(checkpoints) == [200, 400]
  assert checkpoint_lib.checkpoint_steps(os.path.join(run, 'nothing')) == []
  step_200 = ocp.StandardCheckpointer().restore(os.path.join(checkpoints, '200', 'state'))['params']
  _assert_same_params(restored.pretrained.params, jax.tree.map(np.asarray, step_200))
  assert model_path.restore_run(run).step == 400


def test_a_checkpoint_of_another_model_is_one_error(run, tmp_path):
  other = str(tmp_path / 'run')
  shutil.copytree(run, other)
  path = os.path.join(other, 'config.json')
  with open(path) as f:
    run_config = json.load(f)
  run_config['model']['hidden_size'] = 64
  with open(path, 'w') as f:
    json.dump(run_config, f)
  with pytest.raises(
    ExportError,
    match=r'checkpoint 400 of .*: parameter '
    r'\S+ has shape \([\d, ]+\), expected',
  ):
    model_path.restore_run(other)


def test_existing_output_and_bad_runs_are_one_line_errors(run, tmp_path):
  out = tmp_path / 'taken'
  out.mkdir()
  (out / 'keep.txt').write_text('mine')
  export_testing.assert_one_line_error(
    export_testing.launch('export', f'--model={run}', f'--output={out}'),
    'already exists and is not empty',
  )
  assert os.listdir(out) == ['keep.txt'] and (out / 'keep.txt').read_text() == 'mine'
  export_testing.assert_one_line_error(
    export_testing.launch('export', f'--model={run}', '--step=7', f'--output={tmp_path / "new"}'),
    'no checkpoint at step 7: choose one of 200, 400',
  )
  export_testing.assert_one_line_error(
    export_testing.launch(
      'export',
      f'--model={export_testing.exported("hf")}',
      '--step=200',
      f'--output={tmp_path / "new"}',
    ),
    '--step chooses a checkpoint of a training workdir; the Hugging Face model .* has none',
  )
  export_testing.assert_one_line_error(
    export_testing.launch('export', f'--model={tmp_path}', f'--output={tmp_path / "new"}'),
    f'{tmp_path} holds no model: expected .*; found taken',
  )
  assert not os.path.exists(tmp_path / 'new')


@pytest.mark.parametrize('sharing', ['attention', 'ffn'])
def test_partial_sharing_has_no_hf_form_but_exports_to_flax(run, sharing, tmp_path):
  ours = model_path.restore_run(run).pretrained
  config = dataclasses.replace(ours.config, sharing=sharing)
  rng = np.random.default_rng(0)
  params = jax.tree.map(
    lambda x: rng.standard_normal(x.shape).astype(np.float32), param_shapes(config)
  )
  pretrained = pretrained_lib.Pretrained(config, params, ours.tokenizer)
  with pytest.raises(
    ExportError, match=f"sharing='{sharing}' has no Hugging Face ALBERT form.*the flax format"
  ) as error:
    pretrained_lib.save_hf(pretrained, str(tmp_path / 'hf'))
  assert '\n' not in str(error.value) and not os.path.exists(tmp_path / 'hf')
  pretrained_lib.save_flax(pretrained, str(tmp_path / 'flax'))
  loaded = pretrained_lib.load_flax(str(tmp_path / 'flax'))
  assert loaded.config == config
  _assert_same_params(loaded.params, params)


def test_import_names_the_first_offending_parameter(tmp_path):
  hf_dir = str(tmp_path / 'hf')
  shutil.copytree(export_testing.exported('hf'), hf_dir)
  weights = os.path.join(hf_dir, 'model.safetensors')
  state_dict = safetensors.numpy.load_file(weights)
  name = 'albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight'
  state_dict[name] = state_dict[name][:, :-1].copy()
  safetensors.numpy.save_file(state_dict, weights)
  export_testing.assert_one_line_error(
    export_testing.launch('export', f'--model={hf_dir}', f'--output={tmp_path / "out"}'),
    f'{name} has shape \\(96, 47\\), expected \\(96, 48\\)',
  )

  with open(os.path.join(hf_dir, 'config.json')) as f:
    hf_config = json.load(f)
  with open(os.path.join(hf_dir, 'config.json'), 'w') as f:
    json.dump({**hf_config, 'model_type': 'bert'}, f)
  with pytest.raises(ExportError, match="a 'bert' model, not 'albert'"):
    pretrained_lib.load_hf(hf_dir)
  assert not os.path.exists(tmp_path / 'out')


def test_init_from_starts_pretraining_from_the_exported_params(tmp_path):
  _, config = export_testing.pretrained_run()
  flax_dir = export_testing.exported('flax')
  config = config.copy_and_resolve_references()
  config.init_from = flax_dir
  config.train.num_steps = 1  # Its update has learning rate 0 (warmup).
  config.checkpoint.every_steps = 1
  pretraining.train(
    PretrainConfig.from_config(config), str(tmp_path / 'run'), devices=jax.devices()[:1]
  )
  started = ocp.StandardCheckpointer().restore(
    str(tmp_path / 'run' / 'checkpoints' / '1' / 'state')
  )['params']
  _assert_same_params(jax.tree.map(np.asarray, started), pretrained_lib.load_flax(flax_dir).params)
  # The vocabulary came with the model (none was trained) and stays with the run.
  model_vocab = pretrained_lib.load_flax(flax_dir).tokenizer.fingerprint
  assert vocabulary.load(str(tmp_path / 'run' / 'vocab')).fingerprint == model_vocab

  # A training workdir is a model path too: its latest checkpoint.
  config.init_from = export_testing.pretrained_run()[0]
  pretraining.train(
    PretrainConfig.from_config(config), str(tmp_path / 'from_run'), devices=jax.devices()[:1]
  )
  started = ocp.StandardCheckpointer().restore(
    str(tmp_path / 'from_run' / 'checkpoints' / '1' / 'state')
  )['params']
  _assert_same_params(
    jax.tree.map(np.asarray, started), model_path.restore_run(config.init_from).pretrained.params
  )
  config.init_from = flax_dir

  config.model.hidden_size = 64
  with pytest.raises(
    ExportError,
    match='has model.hidden_size=48 but the config says 64: set --config.model.hidden_size=48',
  ):
    pretraining.train(
      PretrainConfig.from_config(config), str(tmp_path / 'other'), devices=jax.devices()[:1]
    )
