"""Pretraining data: tokenizer, sources, SOP/NSP examples, input pipeline.

errors.py          DataError, the one exception type (one-line messages).
tokenizer.py       the Tokenizer interface.
sentencepiece_tokenizer.py  spiece.model with ALBERT's normalisation.
hf_tokenizer.py    tokenizer.json and BERT vocab.txt, via `tokenizers`.
vocabulary.py      load(dir) of a spiece.model, tokenizer.json or vocab.txt
                   directory; train_tokenizer(..., model_type='unigram'|
                   'wordpiece').
sources.py         'builtin' | 'text:GLOB' | 'tfds:NAME[/CONFIG][:SPLIT]'
                   -> documents (lists of sentences).
builtin_corpus.py  the default corpus: Python's documentation prose.
sentences.py       the sentence splitting rule for raw text.
corpus.py          tokenized documents in memory (the Documents layout).
prepared.py        tokenized documents in ArrayRecord shards ('prepared:DIR').
examples.py        segment pairs, SOP/NSP labels, n-gram masking.
pipeline.py        grain datasets per process, checkpointable; global
                   jax.Arrays. Start here: its docstring shows the API.
"""
