"""The README is a front page and docs/ the manual: small, linked, and in today's flags."""

import pathlib
import re

import pytest

from launch import command_line

ROOT = pathlib.Path(__file__).resolve().parent.parent
PAGES = [ROOT / 'README.md', *sorted((ROOT / 'docs').glob('*.md'))]
# The two set-up-and-run commands a newcomer types first.
FIRST_COMMANDS = (
  'pip install -r requirements.txt && python -m launch.pretrain\n'
  'pip install -r requirements-test.txt && python -m pytest -q tests\n'
)


def test_the_readme_is_a_front_page():
  readme = (ROOT / 'README.md').read_text()
  assert len(readme.encode()) <= 12 * 1024
  assert readme.startswith('# albert-jax\n\n```bash\n' + FIRST_COMMANDS + '```\n')
  # CI runs the same test command.
  assert 'python3 -m pytest -q tests\n' in (ROOT / '.ci' / 'run').read_text()


@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_every_relative_link_resolves(page):
  links = re.findall(r'\]\(([^)#\s]+)(?:#[^)]*)?\)', page.read_text())
  missing = [
    link for link in links if '://' not in link and not (page.parent / link).resolve().exists()
  ]
  assert not missing, missing


def _defined_flags(launcher: str) -> set[str]:
  """The flags `launch/LAUNCHER.py` defines, with those of the launch/ modules it imports."""
  source = (ROOT / 'launch' / f'{launcher}.py').read_text()
  for module in re.findall(r'^from launch import (.+)$', source, re.M):
    for name in module.split(','):
      path = ROOT / 'launch' / f'{name.strip()}.py'
      source += path.read_text() if path.exists() else ''
  return set(re.findall(r"DEFINE_\w+\(\s*'(\w+)'", source))


def _commands(text: str) -> list[tuple[str, list[str]]]:
  """(launcher, its flags) of every `python -m launch.NAME ...` command of a page."""
  text = text.replace('\\\n', ' ')
  return [
    (name, re.findall(r'--(\w+)', args))
    for name, args in re.findall(r'python -m launch\.(\w+)([^\n`&;|#]*)', text)
    if (ROOT / 'launch' / f'{name}.py').exists()  # Not `launch.NAME`, the placeholder.
  ]


# absl's own flags, which every launcher has.
ABSL_FLAGS = ('help', 'helpfull', 'helpshort', 'verbosity', 'flagfile')


@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_every_flag_of_a_documented_command_exists(page):
  unknown = [
    f'launch.{launcher} --{flag}'
    for launcher, used in _commands(page.read_text())
    for flag in used
    if flag not in ABSL_FLAGS
    and flag not in command_line.DEPRECATED_FLAGS  # The next test's.
    and not {flag, flag.removeprefix('no')} & _defined_flags(launcher)
  ]
  assert not unknown, unknown


@pytest.mark.parametrize('page', PAGES, ids=[p.name for p in PAGES])
def test_no_page_uses_a_deprecated_flag(page):
  deprecated = [
    f'launch.{launcher} --{flag}'
    for launcher, used in _commands(page.read_text())
    for flag in used
    if flag in command_line.DEPRECATED_FLAGS and flag not in _defined_flags(launcher)
  ]
  assert not deprecated, deprecated


def test_the_deprecated_flag_check_sees_one():
  assert _commands('python -m launch.export --workdir=RUN \\\n    --output=DIR') == [
    ('export', ['workdir', 'output'])
  ]
  assert 'workdir' not in _defined_flags('export')
  assert 'workdir' in _defined_flags('pretrain')
