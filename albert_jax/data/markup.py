"""Markup-heavy lines dropped from documentation text (`data.drop_markup`).

Documentation sources (reStructuredText, Markdown, POD) mix prose with code
and tables, which are no sentences to pretrain on. Rules, line by line; blank
lines are always kept, since they separate paragraphs and documents:

  fences         A line starting with ``` or ~~~ opens or closes a code block;
                 both fences and all between them go. So do HTML comments,
                 from '<!--' to '-->' (Markdown's hidden metadata).
  rst blocks     Explicit markup lines (starting with '.. ': directives,
                 comments, targets) go, and so does the more indented block
                 after them, except the body of a prose directive (a note, a
                 version note, a Sphinx description of a function, class ...).
                 After a line ending in '::' its literal block goes; the prose
                 before the '::' stays, with one ':'. Directive options
                 (':maxdepth: 2') go.
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
_DIRECTIVE = re.compile(r'\.\.\s+([\w:.-]+)::')
_OPTION = re.compile(r':[\w-]+:(\s+\S+)?')
# Directives whose body is prose (its domain prefix, as 'py:' or 'c:', aside).
_PROSE_DIRECTIVES = frozenset(
  'admonition attention caution danger error hint important note seealso tip warning '
  'versionadded versionchanged deprecated deprecated-removed '
  'attribute class classmethod coroutinefunction coroutinemethod data decorator '
  'decoratormethod describe envvar exception function macro member method module '
  'option staticmethod struct type var'.split()
)
_POD_COMMAND = re.compile(r'=[a-zA-Z]\w*')
_MIN_LETTER_SHARE = 0.5


def drop_markup(lines: Iterable[str]) -> Iterator[str]:
  """Yields the lines of `lines` that are not markup, stripped ('' for blank)."""
  in_fence = in_comment = pod = skip_paragraph = False
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
    if text.startswith('<!--') or in_comment:
      in_comment = not text.endswith('-->')
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
      directive = _DIRECTIVE.match(text)
      if not (directive and directive.group(1).split(':')[-1] in _PROSE_DIRECTIVES):
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
    if skip_paragraph or _OPTION.fullmatch(text) or _is_table_row(text):
      continue
    if _letter_share(text) < _MIN_LETTER_SHARE:
      continue
    yield text


def _is_table_row(text: str) -> bool:
  return len(text) > 1 and text[0] in '|+' and text[-1] in '|+'


def _letter_share(text: str) -> float:
  """The share of letters among the non-space characters of non-blank `text`."""
  characters = [c for c in text if not c.isspace()]
  return sum(c.isalpha() for c in characters) / len(characters)
