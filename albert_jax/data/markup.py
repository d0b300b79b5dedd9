"""Markup-heavy lines dropped from documentation text (`data.drop_markup`).

Documentation sources (reStructuredText, Markdown, POD) mix prose with code
and tables, which are no sentences to pretrain on. Rules, line by line; blank
lines are always kept, since they separate paragraphs and documents:

  fences         A line starting with ``` or ~~~ opens or closes a code block;
                 both fences and all between them go.
  rst blocks     After explicit markup (a line starting with '.. ': a
                 directive such as `.. code-block:: c`, a comment, a target) or
                 a line ending in '::' (a literal block follows), the more
                 indented block that follows goes (code, or a directive's body).
                 Explicit markup lines go; prose ending in '::' keeps one ':'.
  POD            Command lines (`=head1`, `=item`, `=over`, `=cut` ...) go, and
                 once one was seen, so do indented paragraphs (POD's verbatim
                 code).
  doctest        A paragraph starting with '>>>' goes.
  tables         Rows and borders: '|' or '+' at both ends ('| a | b |',
                 '+---+---+').
  few letters    A line where under half the non-space characters are letters:
                 underlines ('====', '----'), simple-table borders, numbers,
                 most code ('x = f(a, b)').
"""

import re
from collections.abc import Iterable, Iterator

_FENCE = ('```', '~~~')
_POD_COMMAND = re.compile(r'=[a-zA-Z]\w*')
_MIN_LETTER_SHARE = 0.5


def drop_markup(lines: Iterable[str]) -> Iterator[str]:
  """Yields the lines of `lines` that are not markup, stripped ('' for blank)."""
  in_fence = pod = skip_paragraph = False
  paragraph_start = True  # The previous line was blank.
  block_indent = -1  # Lines indented more than this (>= 0) are a dropped block.
  for line in lines:
    text = line.strip()
    first, paragraph_start = paragraph_start, not text
    if text.startswith(_FENCE):
      in_fence = not in_fence
      continue
    if in_fence:
      continue
    if not text:
      skip_paragraph = False
      yield ''
      continue
    indent = len(line.expandtabs(8)) - len(line.expandtabs(8).lstrip())
    if block_indent >= 0:
      if indent > block_indent:
        continue
      block_indent = -1
    if text.startswith('.. ') or text == '..':
      block_indent = indent
      continue
    if text.endswith('::'):
      block_indent = indent
      prose = text[:-2].rstrip()
      if prose:
        yield prose if prose.endswith(':') else prose + ':'
      continue
    if _POD_COMMAND.match(line):
      pod = True
      continue
    if first and (text.startswith('>>>') or (pod and indent > 0)):
      skip_paragraph = True
    if skip_paragraph or _is_table_row(text) or _letter_share(text) < _MIN_LETTER_SHARE:
      continue
    yield text


def _is_table_row(text: str) -> bool:
  return len(text) > 1 and text[0] in '|+' and text[-1] in '|+'


def _letter_share(text: str) -> float:
  """The share of letters among the non-space characters of non-blank `text`."""
  characters = [c for c in text if not c.isspace()]
  return sum(c.isalpha() for c in characters) / len(characters)
