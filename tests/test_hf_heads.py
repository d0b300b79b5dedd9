"""Every Hugging Face ALBERT class, read and written by albert_jax.pretrained.

For each class: a tiny transformers model with random weights, saved as
transformers saves it (single, sharded or PyTorch-pickle weights), is read
with `load_hf`; our matching module gives its outputs (fp32, 1e-5, a batch
with padding); the parts it lacks are named; `save_hf` writes what
`from_pretrained` reads back with the same outputs, and the flax format
keeps the head.
"""

import dataclasses
import logging
import os
import sys

import model_testing
import numpy as np
import pytest
import torch
import transformers

from albert_jax import hf
from albert_jax import model as albert
from albert_jax import pretrained as pretrained_lib
from albert_jax.data import vocabulary
from albert_jax.errors import ExportError

TOL = 1e-5
TINY = dataclasses.replace(model_testing.TINY, vocab_size=256, num_layers=2)
LABELS = {
  'AlbertForSequenceClassification': ('negative', 'neutral', 'positive'),
  'AlbertForTokenClassification': ('O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC'),
}
# Class -> (how its weights are stored, the parts it lacks).
CASES = {
  'AlbertModel': ('pytorch_model.bin', ('predictions', 'sop_classifier')),
  'AlbertForMaskedLM': ('sharded', ('albert/pooler', 'sop_classifier')),
  'AlbertForPreTraining': ('model.safetensors', ()),
  'AlbertForSequenceClassification': ('model.safetensors', ('predictions', 'sop_classifier')),
  'AlbertForTokenClassification': ('sharded', ('albert/pooler', 'predictions', 'sop_classifier')),
  'AlbertForQuestionAnswering': (
    'pytorch_model.bin',
    ('albert/pooler', 'predictions', 'sop_classifier'),
  ),
}


def _batch() -> dict[str, np.ndarray]:
  rng = np.random.default_rng(0)
  input_mask = np.ones((3, 12), np.int32)
  input_mask[1, 7:] = 0  # Padding in the batch.
  input_mask[2, 10:] = 0
  segment_ids = np.zeros((3, 12), np.int32)
  segment_ids[:, 5:] = 1
  input_ids = rng.integers(5, TINY.vocab_size, (3, 12)).astype(np.int32)
  return dict(
    input_ids=input_ids * input_mask, input_mask=input_mask, segment_ids=segment_ids * input_mask
  )


def _hf_model(name: str) -> torch.nn.Module:
  """A transformers `name` with random weights (no zero biases or unit scales)."""
  labels = LABELS.get(name, ())
  kwargs = dict(id2label=dict(enumerate(labels)), label2id={x: i for i, x in enumerate(labels)})
  config = transformers.AlbertConfig(
    **hf.to_hf_config(TINY), **(kwargs if labels else {}), attn_implementation='eager'
  )
  torch.manual_seed(0)
  model = getattr(transformers, name)(config).eval()
  with torch.no_grad():
    for tensor in model.parameters():
      tensor.add_(0.05 * torch.randn_like(tensor))
  return model


def _save(model: torch.nn.Module, directory: str, storage: str, vocab: str) -> None:
  if storage == 'pytorch_model.bin':
    # transformers 5 writes safetensors only: a pickle as older versions
    # wrote it (tied decoder included).
    model.config.save_pretrained(directory)
    torch.save(model.state_dict(), os.path.join(directory, storage))
  else:
    model.save_pretrained(directory, max_shard_size='20KB' if storage == 'sharded' else '50GB')
  vocabulary.load(vocab).save_hf(directory, model_max_length=TINY.max_position_embeddings)


def _hf_outputs(model: torch.nn.Module, batch) -> dict[str, np.ndarray]:
  with torch.no_grad():
    out = model(
      input_ids=torch.from_numpy(batch['input_ids']).long(),
      attention_mask=torch.from_numpy(batch['input_mask']).long(),
      token_type_ids=torch.from_numpy(batch['segment_ids']).long(),
    )
  names = {
    'last_hidden_state': 'sequence_output',
    'pooler_output': 'pooled_output',
    'prediction_logits': 'mlm_logits',
    'sop_logits': 'sentence_logits',
  }
  if isinstance(model, transformers.AlbertForMaskedLM):
    names['logits'] = 'mlm_logits'
  return {names.get(k, k): v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}


def _our_outputs(name: str, pretrained, batch) -> dict[str, np.ndarray]:
  """What our module matching `name` computes with the loaded params."""
  config, head = pretrained.config, pretrained.head
  if name in ('AlbertModel', 'AlbertForMaskedLM', 'AlbertForPreTraining'):
    module, params = albert.AlbertForPreTraining(config), pretrained.params
  else:
    module = {
      'AlbertForSequenceClassification': albert.AlbertForSequenceClassification(
        config, len(head.labels)
      ),
      'AlbertForTokenClassification': albert.AlbertForTokenClassification(config, len(head.labels)),
      'AlbertForQuestionAnswering': albert.AlbertForQuestionAnswering(config),
    }[name]
    params = pretrained_lib.task_params(pretrained)
  out = module.apply(
    {'params': params}, batch['input_ids'], batch['input_mask'], batch['segment_ids']
  )
  return {k: np.asarray(v) for k, v in out.items()}


def _assert_close(ours, theirs):
  assert theirs.keys() <= ours.keys()
  for name, value in theirs.items():
    np.testing.assert_allclose(ours[name], value, atol=TOL, rtol=0, err_msg=name)


@pytest.mark.parametrize('name', list(CASES))
def test_every_head_class(name, vocab, tmp_path, caplog):
  storage, lacks = CASES[name]
  model, batch = _hf_model(name), _batch()
  theirs = _hf_outputs(model, batch)
  source = str(tmp_path / 'source')
  _save(model, source, storage, vocab)
  if storage == 'sharded':
    assert os.path.isfile(os.path.join(source, 'model.safetensors.index.json'))

  with caplog.at_level(logging.WARNING):
    pretrained = pretrained_lib.load_hf(source)
  assert pretrained_lib.is_hf(source) and not pretrained_lib.is_flax(source)
  assert pretrained.initialised == lacks
  named = [r.getMessage() for r in caplog.records if 'initialised' in r.getMessage()]
  if lacks:
    assert len(named) == 1 and ', '.join(lacks) in named[0] and name in named[0], named
  else:
    assert not named
  task = {arch: task for task, arch in hf.TASK_ARCHITECTURES.items()}.get(name)
  assert (pretrained.head and pretrained.head.task) == task
  if name in LABELS:
    assert pretrained.head.labels == LABELS[name]
  _assert_close(_our_outputs(name, pretrained, batch), theirs)

  # Our export: transformers reads it as this class, with the same outputs.
  exported = str(tmp_path / 'exported')
  pretrained_lib.save_hf(pretrained, exported)
  reloaded, info = getattr(transformers, name).from_pretrained(exported, output_loading_info=True)
  assert not info['missing_keys'], info
  _assert_close(_hf_outputs(reloaded.eval(), batch), theirs)
  if task is not None:
    assert reloaded.config.architectures == [name]
    assert not info['unexpected_keys'], info
  if name in LABELS:
    assert tuple(reloaded.config.id2label[i] for i in range(len(LABELS[name]))) == LABELS[name]
  again = pretrained_lib.load_hf(exported)
  assert _same_head(again.head, pretrained.head)

  # The flax format carries the head too.
  flax_dir = str(tmp_path / 'flax')
  pretrained_lib.save_flax(pretrained, flax_dir)
  loaded = pretrained_lib.load_flax(flax_dir)
  assert pretrained_lib.is_flax(flax_dir) and not pretrained_lib.is_hf(flax_dir)
  assert _same_head(loaded.head, pretrained.head)
  _assert_close(_our_outputs(name, loaded, batch), theirs)


def _same_head(a, b) -> bool:
  if a is None or b is None:
    return a is b
  same = [np.array_equal(x, y) for x, y in zip(_leaves(a.params), _leaves(b.params), strict=True)]
  return a.task == b.task and a.labels == b.labels and all(same)


def _leaves(params):
  return [params[m][p] for m in sorted(params) for p in sorted(params[m])]


def test_definition_round_trip(vocab, tmp_path):
  definition = pretrained_lib.Definition(TINY, vocabulary.load(vocab), 'classification', ('a', 'b'))
  pretrained_lib.save_definition(definition, str(tmp_path / 'model'))
  loaded = pretrained_lib.load_definition(str(tmp_path / 'model'))
  assert (loaded.config, loaded.task, loaded.labels) == (TINY, 'classification', ('a', 'b'))
  assert loaded.tokenizer.fingerprint == definition.tokenizer.fingerprint


def test_pytorch_pickle_without_torch(vocab, tmp_path, monkeypatch):
  directory = str(tmp_path / 'bin')
  _save(_hf_model('AlbertModel'), directory, 'pytorch_model.bin', vocab)
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` fails.
  with pytest.raises(ExportError, match='torch is not installed: install torch, or resave'):
    pretrained_lib.load_hf(directory)


def test_unsupported_class_is_named(vocab, tmp_path):
  model = _hf_model('AlbertForMultipleChoice')
  _save(model, str(tmp_path / 'mc'), 'model.safetensors', vocab)
  with pytest.raises(ExportError, match='AlbertForMultipleChoice, which is not supported'):
    pretrained_lib.load_hf(str(tmp_path / 'mc'))
