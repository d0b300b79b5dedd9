"""The default corpus: the prose of Python's own documentation.

`pydoc_data.topics` ships with every Python (it backs `help('if')`), so the
default run needs no download. Each section of a topic (a heading underlined
with *, =, - ...) is one document; indented blocks (code, grammar rules) are
dropped, paragraphs are joined and split into sentences. Sections shared by
several topics are kept once.
"""

import re
from pydoc_data import topics

from albert_jax.data.sentences import split_sentences

_UNDERLINE = re.compile(r'([*=\-~^"#+])\1{2,}')


def documents() -> list[list[str]]:
  """Returns the corpus as documents, each a list of sentences."""
  docs = {}
  for name in sorted(topics.topics):
    for doc in _topic_documents(topics.topics[name]):
      docs.setdefault(tuple(doc), doc)
  return list(docs.values())


def _topic_documents(text: str) -> list[list[str]]:
  lines = text.split('\n')
  docs, sentences, paragraph = [], [], []

  def end_paragraph():
    if paragraph:
      sentences.extend(split_sentences(' '.join(paragraph)))
      paragraph.clear()

  for i, line in enumerate(lines):
    following = lines[i + 1] if i + 1 < len(lines) else ''
    if _UNDERLINE.fullmatch(line):
      continue
    if line.strip() and _UNDERLINE.fullmatch(following):  # A heading.
      end_paragraph()
      if sentences:
        docs.append(list(sentences))
        sentences.clear()
    elif not line.strip() or line[0].isspace():  # Blank line or code block.
      end_paragraph()
    else:
      paragraph.append(line.strip())
  end_paragraph()
  if sentences:
    docs.append(sentences)
  return docs
