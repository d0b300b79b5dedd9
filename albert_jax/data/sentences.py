"""Sentence splitting of raw text records (tfds records, builtin paragraphs).

The rule, deliberately simple: every line is split after a sentence end,
i.e. '.', '!' or '?' (optionally followed by closing quotes or brackets)
followed by whitespace, or a CJK full stop '。', '！', '？' (no space
needed).
Empty pieces are dropped. Text in BERT format (one sentence per line) is not
split further.
"""

import re

_SENTENCE_END = re.compile(r'[.!?]["\')\]]*(?=\s)|[。！？]["\')\]」』]*')


def split_sentences(text: str) -> list[str]:
  """Returns the sentences of `text`, stripped, in order."""
  sentences = []
  for line in text.splitlines():
    start = 0
    for end in _SENTENCE_END.finditer(line):
      sentences.append(line[start : end.end()].strip())
      start = end.end()
    sentences.append(line[start:].strip())
  return [s for s in sentences if s]
