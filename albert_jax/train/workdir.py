"""A run's directory: one writer at a time, and the record of what was trained.

lock           held by the running trainer (process 0 of a multi-host run)
               with an OS file lock, which the kernel releases when the
               process ends however it ends (kill -9 included), so a lock
               is never stale; the file names its holder for the message
               a second trainer gets.
config.json    the run's origin: the config it started with, never
               rewritten; until it is written the run has not started,
               and a run that fails before then removes the directory if
               it created it (a path left behind would read as a run).
resumes.jsonl  one line per restart: the step, the time and the settings
               changed since (training settings may change between
               restarts; what defines the model may not).
inputs.json    fingerprints of the files the run reads besides its config
               (the vocabulary's contents, prepared data's metadata.json,
               init_from's model files), rewritten at each start: a rerun
               whose vocabulary or prepared data changed at the same path is
               refused, as a changed model setting is; a changed init_from
               (read only at the first start) is recorded in resumes.jsonl.
config.json and inputs.json are written whole (albert_jax/records.py), and
resumes.jsonl line by line: a torn last line is cut off.
"""

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Collection, Iterator, Mapping
from typing import Any, Protocol

import jax
from jax.experimental import multihost_utils

from albert_jax import records
from albert_jax.errors import UsageError

LOCK_FILE = 'lock'
CONFIG_FILE = 'config.json'
RESUMES_FILE = 'resumes.jsonl'
INPUTS_FILE = 'inputs.json'
# Keys holding a local path, compared as the file they name.
_PATH_KEYS = ('data.vocab', 'init_from')
# Keys naming an input whose contents define the run (a change is refused),
# and inputs read only at the first start (a change is recorded).
_DEFINING_INPUTS = ('data.vocab', 'data.source')
_FIRST_START_INPUTS = ('init_from',)
# Files larger than this are fingerprinted by size and modification time
# (a model's weights), smaller ones by their contents (a vocabulary).
_HASHED_BYTES = 64 << 20


class RunConfig(Protocol):
  """A config record (PretrainConfig, FinetuneConfig) as the workdir sees it."""

  # Dotted keys, or block prefixes ending in '.', that define what is trained;
  # a workdir refuses a rerun that changes one of them. A key added to the
  # code later defaults to what the code did before it: runs saved without
  # it resume at that default.
  FIXED_KEYS: tuple[str, ...]
  # Keys under FIXED_KEYS that may change all the same (compute settings).
  RUNTIME_KEYS: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Workdir:
  """A claimed run directory and what changed since its last start."""

  path: str
  # 'train.num_steps': (saved, now) for the settings changed since the last
  # start; empty on a first start.
  changed: Mapping[str, tuple[Any, Any]]
  first_start: bool
  # Key -> fingerprint of the file it names, now (see inputs.json).
  inputs: Mapping[str, str | None] = dataclasses.field(default_factory=dict)
  # Keys of the inputs read only at the first start whose files changed since.
  inputs_changed: tuple[str, ...] = ()

  def check(self, config: Any) -> 'Workdir':
    """This workdir for `config`, the run's config once it has settled the
    keys `claim` left out: UsageError if it defines another model than the
    saved run."""
    return _checked(self.path, config)

  def record_start(self, config: Any, step: int) -> None:
    """Writes config.json on the first start, else appends the restart at
    `step` to resumes.jsonl (process 0 only)."""
    if jax.process_index() != 0:
      return
    records.write_json(os.path.join(self.path, INPUTS_FILE), dict(self.inputs))
    if self.first_start:
      records.write_atomic(os.path.join(self.path, CONFIG_FILE), _to_json(config))
      return
    if self.changed:
      print(
        f'resuming at step {step} with changed settings: {_describe(self.changed, self.changed)}',
        flush=True,
      )
    if self.inputs_changed:
      print(
        f'resuming at step {step}: {", ".join(self.inputs_changed)} changed since the run '
        'started (not read on resuming: the checkpoint holds the params)',
        flush=True,
      )
    record = {
      'step': step,
      'time': _now(),
      'changed': {k: list(v) for k, v in self.changed.items()},
    }
    if self.inputs_changed:
      record['inputs_changed'] = list(self.inputs_changed)
    records.append_jsonl(os.path.join(self.path, RESUMES_FILE), record)


@contextlib.contextmanager
def claim(path: str, config: Any, *, unsettled: Collection[str] = ()) -> Iterator[Workdir]:
  """Creates or checks `path`, locks it for this run, and refuses a config
  that defines another model than the one trained there.

  Keys in `unsettled` are left out of that check: values the run settles
  only once it holds the workdir (the pretrainer's vocabulary size, from a
  tokenizer it may train there); `Workdir.check` compares them then.
  A run that fails before it starts (writes config.json) removes `path` if
  it created it; a directory that was there is left in place.

  Raises UsageError (one line, nothing written) for a path that is a file,
  cannot be created or written, is locked by another run, or holds another
  model's run.
  """
  with _locked(path):
    yield _checked(path, config, unsettled)


def _checked(path: str, config: Any, unsettled: Collection[str] = ()) -> Workdir:
  saved = _saved_config(path)
  now = _flatten(dataclasses.asdict(config))
  # Derived fields (which keys were left to the run) are no settings to compare.
  derived = [f.name for f in dataclasses.fields(config) if f.metadata.get('derived')]
  changed = {} if saved is None else _changes(_without(saved, derived), _without(now, derived))
  defaults = _defaults(config)
  # A key the saved config lacks came into the code after the run started:
  # at its default it is what the code did before (new FIXED_KEYS keep that).
  added = {k for k in changed if k not in saved and k in defaults and now[k] == defaults[k]}
  fixed = [k for k in changed if _is_fixed(k, config) and k not in unsettled and k not in added]
  if fixed:
    raise UsageError(
      f'{path} holds a run of another model ({_describe(changed, fixed)}); '
      'rerun with its settings or use a new --workdir'
    )
  inputs = {key: _fingerprint(now[key], key) for key in _input_keys(now)}
  saved_inputs = _saved_inputs(path) if saved is not None else {}
  differs = [k for k in inputs if k in saved_inputs and saved_inputs[k] != inputs[k]]
  refused = [k for k in differs if k not in _FIRST_START_INPUTS]
  if refused:
    raise UsageError(
      f'{path} holds a run of other inputs: '
      + ', '.join(f'{k} {now[k]} changed since the run started' for k in refused)
      + ' (another file at the same path); restore it or use a new --workdir'
    )
  return Workdir(
    path=path,
    changed=changed,
    first_start=saved is None,
    inputs=inputs,
    inputs_changed=tuple(differs),
  )


def _input_keys(flat: Mapping[str, Any]) -> list[str]:
  """The keys of `flat` (a flattened config) that name a local input."""
  keys = []
  for key in (*_DEFINING_INPUTS, *_FIRST_START_INPUTS):
    value = flat.get(key)
    if key == 'data.source' and isinstance(value, str):
      value = value.removeprefix('prepared:') if value.startswith('prepared:') else None
    if isinstance(value, str) and value and os.path.exists(value):
      keys.append(key)
  return keys


def _fingerprint(value: str, key: str) -> str | None:
  """sha256 of the files `value` names (a file, or a directory's files, by
  relative path): their contents, or their sizes and modification times for
  large files and for inputs read only at the first start (a model: a
  workdir may hold gigabytes of checkpoints). Prepared data: its
  metadata.json, which lists its shards' sizes and checksums. None when it
  is not readable."""
  by_contents = key not in _FIRST_START_INPUTS
  path = value.removeprefix('prepared:') if key == 'data.source' else value
  if key == 'data.source':
    path = os.path.join(path, 'metadata.json')
  if os.path.isfile(path):
    files = [(os.path.basename(path), path)]
  else:
    files = sorted(
      (os.path.relpath(os.path.join(root, name), path), os.path.join(root, name))
      for root, _, names in os.walk(path)
      for name in names
    )
  digest = hashlib.sha256()
  try:
    for name, file in files:
      info = os.stat(file)
      digest.update(f'{name}\0{info.st_size}\0'.encode())
      if info.st_size > _HASHED_BYTES or not by_contents:
        digest.update(str(info.st_mtime_ns).encode())
        continue
      with open(file, 'rb') as f:
        digest.update(hashlib.file_digest(f, 'sha256').digest())
  except OSError:
    return None
  return digest.hexdigest()


def _saved_inputs(path: str) -> dict[str, str | None]:
  """The fingerprints inputs.json recorded at the last start ({} when none:
  a run of an earlier version, fingerprinted from this start on)."""
  inputs_path = os.path.join(path, INPUTS_FILE)
  if not os.path.exists(inputs_path):
    return {}
  return records.read_json(inputs_path, fix=f'delete {inputs_path} to fingerprint them anew')


def _prepare(path: str) -> str | None:
  """The directory exists and is writable, or one line says why not.
  Returns the outermost directory this created (None if `path` existed)."""
  if os.path.exists(path) and not os.path.isdir(path):
    raise UsageError(f'workdir {path} is a file, not a directory')
  created = _outermost_missing(path)
  try:
    os.makedirs(path, exist_ok=True)
  except OSError as e:
    raise UsageError(f'cannot create workdir {path}: {_reason(e)}') from None
  try:
    with tempfile.TemporaryFile(dir=path):
      pass
  except OSError as e:
    _remove_created(path, created)
    raise UsageError(f'cannot write to workdir {path}: {_reason(e)}') from None
  return created


def _outermost_missing(path: str) -> str | None:
  """The outermost of `path` and its parents that does not exist: the
  first directory makedirs(path) creates."""
  missing = None
  path = os.path.abspath(path)
  while not os.path.lexists(path):
    missing, path = path, os.path.dirname(path)
  return missing


def _remove_created(path: str, created: str | None) -> None:
  """Removes `path` and the parents up to `created` that are left empty;
  nothing when `created` is None (the directory was there before)."""
  if created is None:
    return
  shutil.rmtree(path, ignore_errors=True)
  parent = os.path.abspath(path)
  while parent != created:
    parent = os.path.dirname(parent)
    try:
      os.rmdir(parent)  # Only if empty: another run may have written beside.
    except OSError:
      return


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
  """Process 0 prepares the directory and holds its lock; the other processes
  learn whether it could and share the outcome."""
  error = ''
  lock_fd = None
  created = None  # The outermost directory process 0 created for `path`.
  if jax.process_index() == 0:
    try:
      created = _prepare(path)
      lock_fd = _lock(os.path.join(path, LOCK_FILE))
    except UsageError as e:
      error = str(e)
  if jax.process_count() > 1:
    taken = multihost_utils.broadcast_one_to_all(int(not error))
    if not taken and not error:
      error = f'{path} is in use by another run (process 0 could not lock it)'
  if error:
    # Nothing removed: a run that could not lock the directory may have
    # raced the one holding it to create it.
    raise UsageError(error)
  try:
    yield
  except BaseException:
    # Removed while still locked, so no other run can have started in it.
    if not os.path.exists(os.path.join(path, CONFIG_FILE)):
      _remove_created(path, created)
    raise
  finally:
    if lock_fd is not None:
      os.ftruncate(lock_fd, 0)  # Released cleanly: nothing to report next time.
      os.close(lock_fd)


def _lock(lock_path: str) -> int:
  """An open descriptor of `lock_path` holding an exclusive lock."""
  fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
  try:
    # flock: tied to this open file, released when the process ends.
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = _read_holder(fd)
    os.close(fd)
    if e.errno not in (errno.EACCES, errno.EAGAIN, errno.EWOULDBLOCK):
      raise UsageError(f'cannot lock {lock_path}: {_reason(e)}') from None
    raise UsageError(
      f'{os.path.dirname(lock_path)} is in use by another run: host '
      f'{holder.get("host", "?")}, pid {holder.get("pid", "?")}, since '
      f'{holder.get("since", "?")}; wait for it to end or stop it first'
    ) from None
  previous = _read_holder(fd)
  if previous:
    print(
      f'previous run (host {previous.get("host")}, pid {previous.get("pid")}) ended '
      'without releasing the workdir; taking it over',
      flush=True,
    )
  holder = {'host': socket.gethostname(), 'pid': os.getpid(), 'since': _now()}
  os.ftruncate(fd, 0)
  os.pwrite(fd, json.dumps(holder).encode(), 0)
  os.fsync(fd)
  return fd


def _read_holder(fd: int) -> dict[str, Any]:
  try:
    return json.loads(os.pread(fd, 4096, 0) or b'{}')
  except ValueError:
    return {}


def _without(flat: Mapping[str, Any], keys: Collection[str]) -> dict[str, Any]:
  return {k: v for k, v in flat.items() if k not in keys}


def _saved_config(path: str) -> dict[str, Any] | None:
  """The flattened config of the last start: config.json with the changes
  of every restart applied; None when the run never started."""
  config_path = os.path.join(path, CONFIG_FILE)
  if not os.path.exists(config_path):
    return None
  saved = records.read_json(
    config_path,
    fix='it records what this run trains: restore it from a copy, or use a new --workdir',
  )
  saved = _flatten(saved)
  for record in records.read_jsonl(os.path.join(path, RESUMES_FILE)):
    saved.update({k: new for k, (_, new) in record['changed'].items()})
  return saved


def _changes(saved: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
  """Keys whose value differs, as (saved, now); both flattened as JSON."""
  changed = {}
  for key in sorted(saved.keys() | now.keys()):
    before, after = saved.get(key), now.get(key)
    if before != after and not (key in _PATH_KEYS and _same_path(before, after)):
      changed[key] = (before, after)
  return changed


def _same_path(before: Any, after: Any) -> bool:
  """Whether two spellings of a path (relative, through a link) are one."""
  return bool(before and after) and os.path.realpath(before) == os.path.realpath(after)


def _is_fixed(key: str, config: RunConfig) -> bool:
  matches = lambda keys: any(key == k or (k.endswith('.') and key.startswith(k)) for k in keys)
  return matches(config.FIXED_KEYS) and not matches(config.RUNTIME_KEYS)


def _describe(changed: Mapping[str, tuple[Any, Any]], keys: Any) -> str:
  return ', '.join(f'{k} {changed[k][0]} -> {changed[k][1]}' for k in keys)


def _defaults(config: Any, prefix: str = '') -> dict[str, Any]:
  """The flattened defaults of a config record's fields, blocks included."""
  flat = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      flat.update(_defaults(value, f'{prefix}{field.name}.'))
    elif field.default is not dataclasses.MISSING:
      flat[f'{prefix}{field.name}'] = _jsonable(field.default)
  return flat


def _flatten(tree: Mapping[str, Any], prefix: str = '') -> dict[str, Any]:
  flat = {}
  for key, value in tree.items():
    if isinstance(value, Mapping):
      flat.update(_flatten(value, f'{prefix}{key}.'))
    else:
      flat[f'{prefix}{key}'] = _jsonable(value)
  return flat


def _jsonable(value: Any) -> Any:
  return json.loads(json.dumps(value))


def _to_json(config: Any) -> str:
  return json.dumps(dataclasses.asdict(config), indent=2, sort_keys=True)


def _reason(error: OSError) -> str:
  return (error.strerror or str(error)).lower()


def _now() -> str:
  return datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M:%S UTC')
