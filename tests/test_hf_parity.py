"""Parity with Hugging Face transformers' PyTorch AlbertForPreTraining.

The same weights, converted both ways, must give the same sequence output,
pooled output, MLM logits and SOP logits (fp32, 1e-5 absolute) on a batch
with padding.
"""

import dataclasses

import jax
import model_testing
import numpy as np
import pytest
import torch
import transformers
import transformers.activations

from albert_jax import hf
from albert_jax.config import ACTIVATIONS, ModelConfig
from albert_jax.model import AlbertForPreTraining
from albert_jax.param_count import param_shapes

TOL = 1e-5
TINY = model_testing.TINY
CASES = {
  'all': TINY,
  'none': dataclasses.replace(TINY, sharing='none'),
  'groups2': dataclasses.replace(TINY, num_hidden_groups=2),
  'inner2': dataclasses.replace(TINY, inner_group_num=2, num_layers=2),
  'groups2_inner2': dataclasses.replace(TINY, num_hidden_groups=2, inner_group_num=2),
  'e_equals_h': dataclasses.replace(TINY, embedding_size=32),
}


def _batch(config: ModelConfig, seed: int = 0) -> dict[str, np.ndarray]:
  rng = np.random.default_rng(seed)
  batch, seq = 3, 12
  input_mask = np.ones((batch, seq), np.int32)
  input_mask[1, 7:] = 0  # Padding in the batch.
  input_mask[2, 10:] = 0
  segment_ids = np.zeros((batch, seq), np.int32)
  segment_ids[:, 5:] = 1
  input_ids = rng.integers(5, config.vocab_size, (batch, seq)).astype(np.int32)
  return dict(
    input_ids=input_ids * input_mask, input_mask=input_mask, segment_ids=segment_ids * input_mask
  )


def _jax_outputs(config, params, batch):
  out = AlbertForPreTraining(config).apply(
    {'params': params}, batch['input_ids'], batch['input_mask'], batch['segment_ids']
  )
  return {name: np.asarray(value) for name, value in out.items()}


def _torch_model(config: ModelConfig, state_dict=None):
  hf_config = transformers.AlbertConfig(**hf.to_hf_config(config), attn_implementation='eager')
  torch.manual_seed(0)
  model = transformers.AlbertForPreTraining(hf_config).eval()
  if state_dict is not None:
    model.load_state_dict({k: torch.tensor(v) for k, v in state_dict.items()}, strict=True)
  return model


def _torch_outputs(model, batch):
  with torch.no_grad():
    out = model.albert(
      input_ids=torch.from_numpy(batch['input_ids']).long(),
      attention_mask=torch.from_numpy(batch['input_mask']).long(),
      token_type_ids=torch.from_numpy(batch['segment_ids']).long(),
    )
    sequence, pooled = out.last_hidden_state, out.pooler_output
    return {
      'sequence_output': sequence.numpy(),
      'pooled_output': pooled.numpy(),
      'mlm_logits': model.predictions(sequence).numpy(),
      'sentence_logits': model.sop_classifier(pooled).numpy(),
    }


def _assert_close(ours, theirs):
  for name in ('sequence_output', 'pooled_output', 'mlm_logits', 'sentence_logits'):
    np.testing.assert_allclose(ours[name], theirs[name], atol=TOL, rtol=0, err_msg=name)


def _random_params(config: ModelConfig, seed: int):
  """Random values for every param (no zero biases or unit scales that would
  hide a mix-up), shaped like the model's own param tree."""
  rng = np.random.default_rng(seed)
  return jax.tree.map(
    lambda leaf: (0.05 * rng.standard_normal(leaf.shape)).astype(np.float32), param_shapes(config)
  )


@pytest.mark.parametrize('case', list(CASES))
def test_jax_to_hf(case):
  config = CASES[case]
  batch = _batch(config)
  params = _random_params(config, seed=2)
  state_dict = hf.to_hf_state_dict(params, config)
  _assert_close(
    _jax_outputs(config, params, batch), _torch_outputs(_torch_model(config, state_dict), batch)
  )
  # And back: the round trip is exact.
  jax.tree.map(np.testing.assert_array_equal, hf.from_hf_state_dict(state_dict, config), params)


@pytest.mark.parametrize('case', list(CASES))
def test_hf_to_jax(case):
  config = CASES[case]
  batch = _batch(config, seed=1)
  model = _torch_model(config)
  with torch.no_grad():
    for name, tensor in model.named_parameters():
      if config.embedding_size == config.hidden_size and ('embedding_hidden_mapping_in' in name):
        continue  # Must stay the identity to have our E == H form.
      tensor.add_(0.05 * torch.randn_like(tensor))
    if config.embedding_size == config.hidden_size:
      model.albert.encoder.embedding_hidden_mapping_in.weight.copy_(torch.eye(config.hidden_size))
      model.albert.encoder.embedding_hidden_mapping_in.bias.zero_()
  state_dict = {k: v.numpy() for k, v in model.state_dict().items()}
  params = hf.from_hf_state_dict(state_dict, config)
  _assert_close(_jax_outputs(config, params, batch), _torch_outputs(model, batch))


def test_config_round_trip():
  for config in CASES.values():
    assert hf.from_hf_config(hf.to_hf_config(config)) == config
  hf_config = transformers.AlbertConfig(**hf.to_hf_config(CASES['none']))
  assert hf_config.num_hidden_groups == 4
  assert hf.from_hf_config(hf_config.to_dict()) == CASES['none']


@pytest.mark.parametrize('sharing', ['attention', 'ffn'])
def test_partial_sharing_has_no_hf_form(sharing):
  config = dataclasses.replace(TINY, sharing=sharing)
  with pytest.raises(ValueError, match='no Hugging Face ALBERT form'):
    hf.to_hf_config(config)
  with pytest.raises(ValueError, match='no Hugging Face ALBERT form'):
    hf.from_hf_state_dict({}, config)


def test_import_errors_name_the_parameter():
  config = CASES['all']
  state_dict = {k: v.numpy() for k, v in _torch_model(config).state_dict().items()}
  name = 'albert.encoder.albert_layer_groups.0.albert_layers.0.ffn.weight'

  bad = dict(state_dict, **{name: np.zeros((3, 3), np.float32)})
  with pytest.raises(ValueError, match=f'{name} has shape \\(3, 3\\)'):
    hf.from_hf_state_dict(bad, config)

  missing = {k: v for k, v in state_dict.items() if k != name}
  with pytest.raises(ValueError, match=f'lacks {name}'):
    hf.from_hf_state_dict(missing, config)

  # A two-group checkpoint does not load into a one-group config.
  grouped = _torch_model(dataclasses.replace(config, num_hidden_groups=2))
  with pytest.raises(ValueError, match='unexpected parameter albert.encoder.albert_layer_groups.1'):
    hf.from_hf_state_dict({k: v.numpy() for k, v in grouped.state_dict().items()}, config)

  # E == H: the HF projection must be the identity.
  square = CASES['e_equals_h']
  random_projection = {k: v.numpy() for k, v in _torch_model(square).state_dict().items()}
  with pytest.raises(ValueError, match='not the identity'):
    hf.from_hf_state_dict(random_projection, square)


@pytest.mark.parametrize('name', list(ACTIVATIONS))
def test_activations_match_hf(name):
  x = np.linspace(-6, 6, 101, dtype=np.float32)
  theirs = transformers.activations.ACT2FN[name](torch.from_numpy(x)).numpy()
  np.testing.assert_allclose(ACTIVATIONS[name](x), theirs, atol=1e-6)
