"""Shared by tests/test_faults.py: trainer processes to start, stop, kill and
read line by line; snapshots of a workdir's files; checkpoint corruption; a
small tmpfs (root only).
"""

import contextlib
import dataclasses
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import train_testing

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKPOINTS = 'checkpoints'
UNUSABLE = 'unusable_checkpoints'
ORBAX_TMP = '.orbax-checkpoint-tmp'


# ---------------------------------------------------------------- processes


def subprocess_env(**extra: str) -> dict[str, str]:
  """train_testing's, caching every compilation: orbax's first save compiles
  many small programs (one per array), seconds in all, in every process."""
  return train_testing.subprocess_env(JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0', **extra)


@dataclasses.dataclass(frozen=True)
class Result:
  """How a launcher process ended: its exit status and whole output."""

  returncode: int
  stdout: str
  stderr: str

  def stderr_lines(self) -> list[str]:
    return [line for line in self.stderr.splitlines() if line.strip()]

  def describe(self) -> str:
    """For assertion messages: everything the process said."""
    return f'exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}'


class Trainer:
  """`python -m launch.pretrain --workdir=WORKDIR FLAGS` (or another
  launcher `module`; workdir None: no --workdir) with stdout read line by
  line (a thread keeps the pipe drained) and stderr in a file."""

  def __init__(self, workdir: str | None, flags: list[str], *, module: str = 'launch.pretrain'):
    self._stderr = tempfile.TemporaryFile(mode='w+')
    workdir_flag = [] if workdir is None else [f'--workdir={workdir}']
    self.process = subprocess.Popen(
      [sys.executable, '-m', module, *workdir_flag, *flags],
      cwd=REPO,
      env=subprocess_env(PYTHONUNBUFFERED='1'),
      text=True,
      stdout=subprocess.PIPE,
      stderr=self._stderr,
    )
    self.lines: list[str] = []  # Read so far.
    self._queue: queue.Queue[str | None] = queue.Queue()
    self._reader = threading.Thread(target=self._read, daemon=True)
    self._reader.start()

  @property
  def pid(self) -> int:
    return self.process.pid

  def _read(self) -> None:
    for line in self.process.stdout:
      self._queue.put(line.rstrip('\n'))
    self._queue.put(None)

  def _take(self, timeout: float) -> str | None:
    """The next line (None at the end of the output); raises queue.Empty."""
    line = self._queue.get(timeout=timeout)
    if line is not None:
      self.lines.append(line)
    return line

  def wait_for(self, predicate: Callable[[str], bool], timeout: float = 240) -> str:
    """The first line from now on that satisfies `predicate`; AssertionError
    (with all output) if the process ends first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while True:
      try:
        line = self._take(max(0.0, deadline - time.monotonic()))
      except queue.Empty:
        self.kill()
        raise AssertionError(f'no such line in {timeout} s\n{self.finish().describe()}') from None
      if line is None:
        raise AssertionError(f'ended before the line was printed\n{self.finish().describe()}')
      if predicate(line):
        return line

  def watch(self, predicate: Callable[[str], bool], seconds: float) -> bool:
    """Reads lines for `seconds` at most; whether one satisfied `predicate`
    (False also when the output ended)."""
    deadline = time.monotonic() + seconds
    with contextlib.suppress(queue.Empty):
      while (line := self._take(max(0.0, deadline - time.monotonic()))) is not None:
        if predicate(line):
          return True
    return False

  def drain(self, quiet: float = 0.3) -> None:
    """Reads what the process has printed, until it prints nothing for
    `quiet` seconds (meant for a stopped process: then it is everything)."""
    with contextlib.suppress(queue.Empty):
      while self._take(quiet) is not None:
        pass

  def signal(self, signum: int) -> None:
    self.process.send_signal(signum)

  def wait_for_stderr(self, text: str, timeout: float = 120) -> None:
    """Returns once stderr holds `text`; AssertionError if the process ends
    first or `timeout` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and self.process.poll() is None:
      self._stderr.seek(0)
      if text in self._stderr.read():
        return
      time.sleep(0.05)
    raise AssertionError(f'no {text!r} on stderr\n{self.finish().describe()}')

  def children(self) -> list[int]:
    """The pids of this process's children (its workers), from /proc."""
    return children(self.pid)

  def kill(self) -> None:
    """kill -9 (if still running)."""
    if self.process.poll() is None:
      self.process.send_signal(signal.SIGKILL)

  def finish(self, timeout: float = 300) -> Result:
    """Waits for the end; the whole output."""
    try:
      self.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
      self.kill()
      self.process.wait()
    self._reader.join(timeout=30)
    with contextlib.suppress(queue.Empty):
      while self._take(0) is not None:
        pass
    self._stderr.seek(0)
    stderr = self._stderr.read()
    self._stderr.close()
    return Result(self.process.returncode, '\n'.join(self.lines), stderr)


def children(pid: int) -> list[int]:
  """The pids of the processes whose parent is `pid`."""
  found = []
  for name in os.listdir('/proc'):
    if name.isdigit():
      with contextlib.suppress(OSError):
        with open(f'/proc/{name}/stat') as f:
          # pid (comm) state ppid ...: comm may hold spaces, not ')'.
          if int(f.read().rsplit(')', 1)[1].split()[1]) == pid:
            found.append(int(name))
  return found


def alive(pid: int) -> bool:
  """Whether `pid` is a running process (not a zombie)."""
  try:
    with open(f'/proc/{pid}/stat') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except OSError:
    return False


def launch(module: str, *args: str, timeout: float = 300) -> Result:
  """Runs `python -m MODULE ARGS` from the repository root to its end."""
  process = subprocess.run(
    [sys.executable, '-m', module, *args],
    cwd=REPO,
    env=subprocess_env(),
    text=True,
    capture_output=True,
    timeout=timeout,
  )
  return Result(process.returncode, process.stdout, process.stderr)


def assert_no_traceback(result: Result) -> None:
  for text in (result.stdout, result.stderr):
    assert 'Traceback' not in text, result.describe()


def assert_refused(result: Result, pattern: str) -> re.Match:
  """Exit 1, exactly one line on stderr matching `pattern`, no traceback."""
  assert_no_traceback(result)
  assert result.returncode == 1, result.describe()
  lines = result.stderr_lines()
  assert len(lines) == 1, result.describe()
  match = re.search(pattern, lines[0])
  assert match, f'{lines[0]!r} does not match {pattern!r}'
  return match


def assert_last_error(result: Result, pattern: str) -> re.Match:
  """Exit 1, stderr's last line matching `pattern`, no traceback."""
  assert_no_traceback(result)
  assert result.returncode == 1, result.describe()
  lines = result.stderr_lines()
  assert lines, result.describe()
  match = re.search(pattern, lines[-1])
  assert match, f'{lines[-1]!r} does not match {pattern!r}'
  return match


def search(pattern: str, result: Result) -> re.Match:
  """`pattern`'s first match in stdout; AssertionError (with the output) if none."""
  match = re.search(pattern, result.stdout, re.MULTILINE)
  assert match, f'{pattern!r} not in stdout\n{result.describe()}'
  return match


# ---------------------------------------------------------------- files


def checkpoint_files(files: dict[str, bytes], step: int, under: str = CHECKPOINTS) -> dict:
  """The files of checkpoint `step` in a snapshot, relative to its directory."""
  prefix = f'{under}/{step}/'
  return {k.removeprefix(prefix): v for k, v in files.items() if k.startswith(prefix)}


def steps(workdir: str, under: str = CHECKPOINTS) -> list[int]:
  """The checkpoint directories named by a step (orbax renames a checkpoint
  to its step once complete), ascending."""
  directory = os.path.join(workdir, under)
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def records(files: dict[str, bytes]) -> list[dict[str, Any]]:
  """The metrics.jsonl records of a snapshot."""
  text = files.get('metrics.jsonl', b'').decode()
  return [json.loads(line) for line in text.splitlines() if line.strip()]


def training_records(workdir: str) -> list[dict[str, Any]]:
  return [r for r in train_testing.read_metrics(workdir) if 'loss' in r]


def assert_kept(before: dict[str, bytes], workdir: str, upto: int | None = None) -> None:
  """Nothing of the run in snapshot `before` was lost or changed: config.json
  (if there was one), every complete checkpoint (up to step `upto`, all when None) byte for byte,
  and the metrics records up to `upto`, in order."""
  after = train_testing.snapshot(workdir)
  if 'config.json' in before:
    assert after.get('config.json') == before['config.json'], 'config.json changed'
  for step in {int(k.split('/')[1]) for k in before if re.match(rf'{CHECKPOINTS}/\d+/', k)}:
    if upto is None or step <= upto:
      assert checkpoint_files(after, step) == checkpoint_files(before, step), (
        f'checkpoint {step} lost or changed'
      )
  kept = [r for r in records(before) if upto is None or r['step'] <= upto]
  assert records(after)[: len(kept)] == kept, 'metrics records lost or changed'


def stray_temp_files(directory: str) -> list[str]:
  """Orbax's temporary checkpoint directories and the tokenizer's temporary
  files (.spiece.model.PID) under `directory`."""
  stray = []
  for root, dirs, names in os.walk(directory):
    for name in dirs + names:
      if ORBAX_TMP in name or name.startswith('.spiece.model.'):
        stray.append(os.path.relpath(os.path.join(root, name), directory))
  return stray


def truncate_largest_data_file(checkpoint: str) -> None:
  """Truncates to half the largest file of the state's OCDBT data (state/d:
  what a restore reads; the per-process files under ocdbt.process_N are
  merged into it when the checkpoint completes)."""
  data = os.path.join(checkpoint, 'state', 'd')
  largest = max((os.path.join(data, name) for name in os.listdir(data)), key=os.path.getsize)
  with open(largest, 'r+b') as f:
    f.truncate(os.path.getsize(largest) // 2)


def delete_state_metadata(checkpoint: str) -> None:
  os.remove(os.path.join(checkpoint, 'state', '_METADATA'))


def delete_data_iterator_state(checkpoint: str) -> None:
  os.remove(os.path.join(checkpoint, 'data', 'process_0-of-1.json'))


CORRUPTIONS = {
  'truncated_data_file': truncate_largest_data_file,
  'deleted_state_metadata': delete_state_metadata,
  'deleted_data_iterator_state': delete_data_iterator_state,
}


# ---------------------------------------------------------------- tmpfs


def mount_error() -> str | None:
  """Why a tmpfs cannot be mounted here (None: it can)."""
  if os.geteuid() != 0:
    return 'mounting a tmpfs needs root'
  directory = tempfile.mkdtemp(prefix='albert-jax-tmpfs-probe-')
  try:
    with tmpfs(directory, '64k'):
      pass
  except (OSError, subprocess.CalledProcessError) as e:
    return f'cannot mount a tmpfs: {e}'
  finally:
    os.rmdir(directory)
  return None


@contextlib.contextmanager
def tmpfs(directory: str, size: str) -> Iterator[str]:
  """`directory` with a tmpfs of `size` mounted on it, unmounted after."""
  os.makedirs(directory, exist_ok=True)
  subprocess.run(
    ['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', directory],
    check=True,
    capture_output=True,
  )
  try:
    yield directory
  finally:
    subprocess.run(['umount', directory], check=True, capture_output=True)


def remount_read_only(directory: str) -> None:
  subprocess.run(
    ['mount', '-o', 'remount,ro', directory], check=True, capture_output=True, text=True
  )


def copy_run(source: str, destination: str) -> str:
  shutil.copytree(source, destination)
  return destination
