"""Examples: layout, masking statistics over 10k examples, SOP/NSP, errors."""

import collections

import numpy as np
import pytest

from albert_jax.data import examples, sources, vocabulary
from albert_jax.data.corpus import TokenizedCorpus, tokenize
from albert_jax.data.vocabulary import train_tokenizer
from albert_jax.errors import DataError

SEQ, PRED = 128, 20
# The ids of a SentencePiece vocabulary train_tokenizer makes (checked below).
PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID = 0, 1, 2, 3, 4


@pytest.fixture(scope='module')
def tokenizer(tmp_path_factory):
  return train_tokenizer(
    sources.read_sentences('builtin'), str(tmp_path_factory.mktemp('vocab')), vocab_size=2000
  )


@pytest.fixture(scope='module')
def corpus(tokenizer):
  return tokenize(sources.read_documents('builtin'), tokenizer)


def make_builder(corpus, tokenizer, seed=0, **kwargs):
  config = examples.ExampleConfig(
    **{'max_seq_length': SEQ, 'max_predictions_per_seq': PRED, **kwargs}
  )
  instances = examples.plan_instances(corpus, config, seed)
  return examples.ExampleBuilder(
    corpus,
    instances,
    config,
    tokenizer=tokenizer,
    seed=seed,
  )


@pytest.fixture(scope='module')
def many(corpus, tokenizer):
  """10,000+ SOP examples stacked, plus their unmasked token ids."""
  builder = make_builder(corpus, tokenizer)
  batch = collections.defaultdict(list)
  epochs = -(-10_000 // len(builder))
  for epoch in range(epochs):
    for index in range(len(builder)):
      for key, value in builder(epoch, index).items():
        batch[key].append(value)
  return {k: np.stack(v) for k, v in batch.items()}


def test_sentencepiece_ids(tokenizer):
  ids = (tokenizer.pad_id, tokenizer.unk_id, tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id)
  assert ids == (PAD_ID, UNK_ID, CLS_ID, SEP_ID, MASK_ID)
  assert tokenizer.special_ids.tolist() == list(ids)


def test_layout_special_tokens_and_segments(many):
  mask, segments = many['input_mask'], many['segment_ids']
  # The random 10 % of masked tokens may be [CLS] or [SEP] (as the original).
  ids = np.stack([unmasked(dict(zip(many, row))) for row in zip(*many.values())])
  assert len(ids) >= 10_000
  for key in examples.FEATURES:
    assert many[key].dtype == np.int32
  assert ids.shape == (len(ids), SEQ) and many['masked_lm_ids'].shape[1] == PRED
  lengths = mask.sum(1)
  assert lengths.max() <= SEQ and (mask[:, 1:] <= mask[:, :-1]).all()
  assert (ids[:, 0] == CLS_ID).all()
  assert ((ids == CLS_ID).sum(1) == 1).all() and ((ids == SEP_ID).sum(1) == 2).all()
  rows = np.arange(len(ids))
  assert (ids[rows, lengths - 1] == SEP_ID).all()
  assert (ids[mask == 0] == 0).all()
  first_sep = np.argmax(ids == SEP_ID, axis=1)
  positions = np.arange(SEQ)
  want = (positions > first_sep[:, None]) & (mask == 1)
  np.testing.assert_array_equal(segments, want.astype(np.int32))
  # Both segments hold at least one token.
  assert (first_sep >= 2).all() and (lengths - first_sep >= 3).all()


def test_masked_share_and_replacements(many, tokenizer):
  weights, positions = many['masked_lm_weights'], many['masked_lm_positions']
  # The budget counts [CLS] and [SEP], as the original.
  counted = many['input_mask'].sum(1)
  uncapped = np.round(counted * 0.15) < PRED
  assert uncapped.mean() > 0.9
  share = weights[uncapped].sum() / counted[uncapped].sum()
  assert abs(share - 0.15) < 0.01
  count = weights.sum(1)
  assert (count >= 1).all() and (count <= PRED).all()
  # Predictions first, sorted, on real tokens, never on [CLS]/[SEP].
  assert (weights[:, 1:] <= weights[:, :-1]).all()
  real = weights == 1
  rows = np.nonzero(real)[0]
  shown = many['input_ids'][rows, positions[real]]
  labels = many['masked_lm_ids'][real]
  assert not np.isin(labels, [PAD_ID, CLS_ID, SEP_ID, MASK_ID]).any()
  assert (np.diff(np.where(real, positions, SEQ + np.arange(PRED)), axis=1) > 0).all()
  assert (positions[~real] == 0).all() and (many['masked_lm_ids'][~real] == 0).all()
  as_mask = (shown == MASK_ID).mean()
  kept = (shown == labels).mean()
  random = 1 - as_mask - kept
  assert abs(as_mask - 0.8) < 0.02
  assert abs(kept - 0.1) < 0.02
  assert abs(random - 0.1) < 0.02
  replaced = shown[(shown != MASK_ID) & (shown != labels)]
  assert (replaced >= 0).all() and (replaced < tokenizer.vocab_size).all()


def test_sop_labels_balanced(many):
  assert abs(many['sentence_order_label'].mean() - 0.5) < 0.02


def test_ngram_span_lengths_follow_one_over_n(corpus, tokenizer):
  """Spans chosen over the words of real seq-512 examples: 6:3:2.

  With a budget of ~77 tokens the last span of an example, shortened to fit
  the budget, barely shows; with 20 predictions it tilts the shares towards
  n = 1 by a few points (see select_ngram_spans).
  """
  builder = make_builder(corpus, tokenizer, max_seq_length=512, max_predictions_per_seq=77)
  rng = np.random.default_rng(0)
  sizes = collections.Counter()
  for epoch in range(6):
    for index in range(len(builder)):
      example = builder(epoch, index)
      length = example['input_mask'].sum()
      ids = unmasked(example)
      tokens = ids[1 : length - 1]
      tokens = tokens[tokens != SEP_ID]
      starts = tokenizer.is_word_start[tokens].copy()
      starts[0] = True
      word_starts = np.flatnonzero(starts)
      word_ends = np.append(word_starts[1:], len(tokens))
      budget = min(77, round(len(tokens) * 0.15))
      spans = examples.select_ngram_spans(rng, word_starts.tolist(), word_ends.tolist(), budget, 3)
      covered = np.zeros(len(tokens), int)
      for w, n in spans:
        sizes[n] += 1
        covered[word_starts[w] : word_ends[w + n - 1]] += 1
      assert covered.max() <= 1 and covered.sum() <= budget
  total = sum(sizes.values())
  assert total > 10_000
  for n, want in ((1, 6 / 11), (2, 3 / 11), (3, 2 / 11)):
    assert abs(sizes[n] / total - want) < 0.03, sizes


def test_masks_whole_words(corpus, tokenizer):
  builder = make_builder(corpus, tokenizer)
  for index in range(200):
    example = builder(0, index)
    positions = example['masked_lm_positions'][example['masked_lm_weights'] == 1]
    original = unmasked(example)
    masked = set(positions.tolist())
    for p in masked:  # A masked continuation piece's word start is masked too.
      if not tokenizer.is_word_start[original[p]] and original[p - 1] not in (CLS_ID, SEP_ID):
        assert p - 1 in masked


def test_deterministic_and_fresh_each_epoch(corpus, tokenizer):
  a, b = make_builder(corpus, tokenizer), make_builder(corpus, tokenizer)
  for index in (0, 7, 42):
    for key, value in a(3, index).items():
      assert value.tobytes() == b(3, index)[key].tobytes()
  assert not np.array_equal(a(0, 5)['masked_lm_positions'], a(1, 5)['masked_lm_positions'])
  other = make_builder(corpus, tokenizer, seed=1)
  assert not np.array_equal(a(0, 5)['input_ids'], other(0, 5)['input_ids'])


def test_sop_swaps_consecutive_segments(tokenizer):
  # Every document: 3 sentences of distinct, increasing ids -> order visible.
  doc = [[10, 11, 12], [20, 21], [30, 31, 32, 33]]
  corpus = _corpus([doc] * 50)
  builder = make_builder(
    corpus, tokenizer, masked_lm_prob=0.01, max_predictions_per_seq=1, short_seq_prob=0.0
  )
  seen = collections.Counter()
  for index in range(len(builder)):
    ex = builder(0, index)
    ids = unmasked(ex)
    sep = list(ids).index(SEP_ID)
    a, b = ids[1:sep], ids[sep + 1 : ex['input_mask'].sum() - 1]
    label = int(ex['sentence_order_label'])
    assert (a[0] > b[-1]) == bool(label)
    assert sorted([*a, *b]) == [10, 11, 12, 20, 21, 30, 31, 32, 33]
    seen[label] += 1
  assert seen[0] and seen[1]


def test_single_segment_documents_get_true_labels(tokenizer):
  """lm1b-like corpora: one sentence per document; cut within it, no fakes."""
  corpus = _corpus([[[100 + i, 200 + i, 300 + i, 400 + i]] for i in range(40)])
  builder = make_builder(corpus, tokenizer, masked_lm_prob=0.01, max_predictions_per_seq=1)
  for index in range(len(builder)):
    ex = builder(0, index)
    ids = unmasked(ex)
    tokens = [t for t in ids[: ex['input_mask'].sum()] if t not in (CLS_ID, SEP_ID)]
    assert len(tokens) == 4
    assert len({t % 100 for t in tokens}) == 1  # One document only.
    assert (tokens != sorted(tokens)) == bool(ex['sentence_order_label'])


def test_nsp_takes_random_documents(tokenizer):
  corpus = _corpus([[[1000 + 10 * d + s for s in range(3)], [1005 + 10 * d]] for d in range(60)])
  builder = make_builder(
    corpus,
    tokenizer,
    sentence_objective='nsp',
    masked_lm_prob=0.01,
    max_predictions_per_seq=1,
    short_seq_prob=0.0,
  )
  labels = []
  for epoch in range(20):
    for index in range(len(builder)):
      ex = builder(epoch, index)
      ids = unmasked(ex)
      sep = list(ids).index(SEP_ID)
      docs_a = {(t - 1000) // 10 for t in ids[1:sep]}
      docs_b = {(t - 1000) // 10 for t in ids[sep + 1 : ex['input_mask'].sum() - 1]}
      label = int(ex['sentence_order_label'])
      assert (docs_a != docs_b) == bool(label)
      labels.append(label)
  assert abs(np.mean(labels) - 0.5) < 0.05


def test_objective_none_keeps_order(tokenizer):
  corpus = _corpus([[[10, 11], [20, 21]]] * 30)
  builder = make_builder(
    corpus, tokenizer, sentence_objective='none', masked_lm_prob=0.01, max_predictions_per_seq=1
  )
  assert all(builder(0, i)['sentence_order_label'] == 0 for i in range(len(builder)))


def test_long_sentences_are_truncated(tokenizer):
  corpus = _corpus([[list(range(100, 400)), list(range(500, 700))]] * 5)
  builder = make_builder(corpus, tokenizer, short_seq_prob=0.0)
  for index in range(len(builder)):
    ex = builder(0, index)
    assert ex['input_mask'].sum() == SEQ


def test_short_sequences_are_drawn(corpus, tokenizer):
  config = examples.ExampleConfig(max_seq_length=SEQ, short_seq_per_document=False)
  instances = examples.plan_instances(corpus, config, 0)
  short = instances[:, 3] < SEQ - 3
  assert 0.05 < short.mean() < 0.15
  assert (instances[short, 3] >= 2).all()


@pytest.mark.parametrize('per_document', [True, False])
def test_short_target_is_drawn_once_per_document(per_document):
  """create_instances_from_document draws target_seq_length once per
  document; every chunk of it but the last then holds the fewest whole
  segments reaching the target: ceil(target / 10) segments of 10 tokens."""
  corpus = _corpus([[list(range(10 * s, 10 * s + 10)) for s in range(40)]] * 300)
  config = examples.ExampleConfig(
    max_seq_length=SEQ, short_seq_prob=0.5, short_seq_per_document=per_document
  )
  instances = examples.plan_instances(corpus, config, 0)
  targets_per_doc = [set(instances[instances[:, 0] == d, 3].tolist()) for d in range(300)]
  if not per_document:  # Drawn per chunk: documents mix targets.
    assert sum(len(t) > 1 for t in targets_per_doc) > 250
    return
  assert all(len(t) == 1 for t in targets_per_doc)
  short = np.mean([t != {SEQ - 3} for t in targets_per_doc])
  assert 0.4 < short < 0.6
  for doc, first, end, target in instances.tolist():
    if end != corpus.document_offsets[doc + 1]:
      assert end - first == -(-target // 10), (first, end, target)


def _word_start_ids(tokenizer, count):
  """`count` ids of pieces that start a word (each masked on its own)."""
  ids = np.flatnonzero(tokenizer.is_word_start)
  return ids[ids >= 5][:count].tolist()


@pytest.mark.parametrize('counts_specials, want', [(True, 3), (False, 2)])
def test_masking_budget_counts_cls_and_sep(tokenizer, counts_specials, want):
  """7 tokens of A and B: the original's round((7 + 3) * 0.3) = 3 predictions;
  A and B alone give round(7 * 0.3) = 2."""
  words = _word_start_ids(tokenizer, 7)
  corpus = _corpus([[words[:4], words[4:]]] * 20)
  builder = make_builder(
    corpus,
    tokenizer,
    masked_lm_prob=0.3,
    max_ngram=1,
    short_seq_prob=0.0,
    num_to_predict_counts_specials=counts_specials,
  )
  for epoch in range(5):
    for index in range(len(builder)):
      ex = builder(epoch, index)
      assert ex['input_mask'].sum() == 10
      assert ex['masked_lm_weights'].sum() == want
      positions = ex['masked_lm_positions'][ex['masked_lm_weights'] == 1]
      assert not np.isin(unmasked(ex)[positions], [CLS_ID, SEP_ID]).any()


@pytest.mark.parametrize('joins', [False, True])
def test_apostrophe_pieces_are_words_of_their_own(tokenizer, joins):
  """A piece such as 's (here one of the builtin vocabulary's quoted-code
  pieces, which differ the same way) starts a word in the original, so it is
  masked without the piece before it; joined to that word, never."""
  joined = tokenizer.word_starts(apostrophe_joins_word=True)
  piece = int(np.flatnonzero(tokenizer.word_starts() != joined)[0])
  assert "'" in tokenizer.id_to_piece(piece)
  w1, w2 = _word_start_ids(tokenizer, 2)
  corpus = _corpus([[[w1, piece], [w2, piece]]] * 20)
  builder = make_builder(
    corpus,
    tokenizer,
    masked_lm_prob=0.3,
    max_ngram=1,
    short_seq_prob=0.0,
    apostrophe_joins_word=joins,
  )
  alone = 0
  for epoch in range(10):
    for index in range(len(builder)):
      ex = builder(epoch, index)
      masked = set(ex['masked_lm_positions'][ex['masked_lm_weights'] == 1].tolist())
      ids = unmasked(ex)
      alone += sum(ids[p] == piece and p - 1 not in masked for p in masked)
  assert (alone > 0) != joins


def test_bad_configs_and_corpora(tokenizer):
  with pytest.raises(DataError, match='no document is long enough'):
    make_builder(_corpus([[[7]], [[8]]]), tokenizer)
  with pytest.raises(DataError, match='nsp needs at least 2 documents'):
    make_builder(_corpus([[[7, 8, 9]]]), tokenizer, sentence_objective='nsp')
  with pytest.raises(DataError, match="sentence_objective='mlm'"):
    examples.ExampleConfig(sentence_objective='mlm')
  with pytest.raises(DataError, match='max_seq_length=4 is too short'):
    examples.ExampleConfig(max_seq_length=4)


@pytest.mark.parametrize('includes_specials', [True, False])
def test_wordpiece_vocabulary_ids_and_words(tmp_path, includes_specials):
  """BERT's layout: specials at 0 and 100-103, '##' pieces inside words; the
  random 10 % come from the whole vocabulary (the original's
  vocab_words[randint]) or from its non-special pieces."""
  pieces = ['[PAD]', *[f'[unused{i}]' for i in range(99)], '[UNK]', '[CLS]', '[SEP]', '[MASK]']
  words = ['the', 'cat', 'sat', 'on', 'mat', 'play', 'walk', '.', '我', '很', '高', '兴', '。']
  pieces += words + ['##ing', '##ed', '##s']
  (tmp_path / 'vocab.txt').write_text('\n'.join(pieces) + '\n', encoding='utf-8')
  tokenizer = vocabulary.load(str(tmp_path))
  assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.mask_id) == (101, 102, 103)
  assert tokenizer.special_ids.tolist() == [0, 100, 101, 102, 103]
  text = ['The cats played on the mat.', 'The cat walked.', '我很高兴。', 'Playing cats sat.'] * 5
  documents = [text[i : i + 4] for i in range(0, len(text), 4)]
  corpus = tokenize(documents, tokenizer)
  builder = make_builder(
    corpus,
    tokenizer,
    max_ngram=1,
    masked_lm_prob=0.5,
    random_token_includes_specials=includes_specials,
  )
  replaced = []
  for index in range(len(builder)):
    for epoch in range(200):
      ex = builder(epoch, index)
      ids, original = ex['input_ids'], unmasked(ex)
      length = ex['input_mask'].sum()
      assert ids[0] == 101 and (original[:length] == 102).sum() == 2
      masked = ex['masked_lm_positions'][ex['masked_lm_weights'] == 1]
      for p in masked:  # A '##' piece is masked with the piece before it.
        if tokenizer.id_to_piece(original[p]).startswith('##'):
          assert p - 1 in masked
      shown = ids[masked]
      replaced += shown[(shown != 103) & (shown != original[masked])].tolist()
  # ~1,300 random tokens over 120 ids: each special one is drawn ~10 times
  # (a drawn [MASK] looks like the 80 % and is not counted here).
  assert len(replaced) > 1000
  if includes_specials:
    assert set(replaced) >= {0, 100, 101, 102}
  else:
    assert not set(replaced) & {0, 100, 101, 102, 103}


def unmasked(example: dict[str, np.ndarray]) -> np.ndarray:
  """input_ids with the masked tokens put back."""
  ids = example['input_ids'].copy()
  real = example['masked_lm_weights'] == 1
  ids[example['masked_lm_positions'][real]] = example['masked_lm_ids'][real]
  return ids


def _corpus(documents: list[list[list[int]]]) -> TokenizedCorpus:
  lengths = [len(s) for d in documents for s in d]
  return TokenizedCorpus(
    token_ids=np.array([t for d in documents for s in d for t in s], np.int32),
    segment_lengths=np.array(lengths, np.int32),
    document_offsets=np.cumsum([0] + [len(d) for d in documents]),
  )
