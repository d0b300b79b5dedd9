"""The JSON files this codebase writes, and what a crash or a full disk leaves of them.

Two kinds, one way to write and read each:
  whole files     a workdir's config.json, a prepared directory's metadata.json
                  and manifest, a sweep's sweep.json: written to PATH.partial,
                  flushed to disk and renamed over PATH (`write_json`), so a
                  reader sees the old file or the new one, never half of one;
  append-only     metrics.jsonl, resumes.jsonl: one JSON object a line, each
  records         written whole and flushed (`append_jsonl`). A crash or a
                  full disk mid-line leaves a torn last line (no newline):
                  readers skip it (`read_jsonl`) and writers cut it off before
                  they append (`repair_jsonl`); it was never complete, so
                  nothing complete is lost.
Anything else wrong with such a file (a whole file that is not JSON, a bad
line before the last) is a RecordError naming the file, the place and the fix.
"""

import json
import os
from typing import Any

from albert_jax.errors import RecordError


def write_atomic(path: str, data: str | bytes) -> None:
  """Writes `path` whole or not at all: a crash or a full disk leaves the
  old file (or none) and no PATH.partial."""
  partial = f'{path}.partial'
  try:
    with open(partial, 'wb' if isinstance(data, bytes) else 'w') as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())  # On disk before the rename makes it the file.
    os.replace(partial, path)
  finally:
    if os.path.exists(partial):
      os.remove(partial)


def write_json(path: str, value: Any) -> None:
  """`value` as indented JSON in `path`, written atomically."""
  write_atomic(path, json.dumps(value, indent=2, sort_keys=True) + '\n')


def read_json(path: str, *, fix: str) -> Any:
  """The JSON value of the whole file `path`; RecordError (with `fix`, what
  to do about it) when it is not JSON, e.g. truncated or overwritten.
  OSError (a missing or unreadable file) is the caller's."""
  with open(path, 'rb') as f:
    data = f.read()
  try:
    return json.loads(data)
  except (UnicodeDecodeError, json.JSONDecodeError) as e:
    reason = f'line {e.lineno} column {e.colno}' if isinstance(e, json.JSONDecodeError) else e
    raise RecordError(
      f'{path} is corrupt (not JSON at {reason}, {len(data)} bytes): {fix}'
    ) from None


def read_jsonl(path: str) -> list[dict[str, Any]]:
  """The records of the JSON-lines file `path` ([] when absent), without a
  torn last line; RecordError for a bad line before it."""
  if not os.path.exists(path):
    return []
  with open(path, 'rb') as f:
    data = f.read()
  complete, _ = _split_torn(data)
  records = []
  for number, line in enumerate(complete.split(b'\n'), 1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError):
      record = None
    if not isinstance(record, dict):
      raise RecordError(
        f'{path} is corrupt at line {number} (not a JSON object): '
        f'remove that line (a copy of the file is safest) and rerun'
      )
    records.append(record)
  return records


def repair_jsonl(path: str) -> int:
  """Cuts a torn last line off `path`; the number of bytes cut (0: none)."""
  if not os.path.exists(path):
    return 0
  with open(path, 'rb') as f:
    data = f.read()
  complete, torn = _split_torn(data)
  if torn:
    with open(path, 'r+b') as f:
      f.truncate(len(complete))
  elif complete and not complete.endswith(b'\n'):  # Whole but for its newline.
    with open(path, 'ab') as f:
      f.write(b'\n')
  return len(torn)


def append_jsonl(path: str, record: dict[str, Any]) -> None:
  """Appends `record` as one line, after cutting a torn last line off."""
  repair_jsonl(path)
  with open(path, 'a') as f:
    f.write(json.dumps(record) + '\n')
    f.flush()


def write_jsonl(path: str, records: list[dict[str, Any]]) -> None:
  """Replaces `path` by `records`, one a line, atomically."""
  write_atomic(path, ''.join(json.dumps(record) + '\n' for record in records))


def _split_torn(data: bytes) -> tuple[bytes, bytes]:
  """(the complete lines, the torn rest): what follows the last newline is
  torn, unless it is a whole JSON object (a line that lost only its newline)."""
  end = data.rfind(b'\n') + 1
  rest = data[end:]
  if not rest.strip():
    return data, b''
  try:
    whole = isinstance(json.loads(rest), dict)
  except (UnicodeDecodeError, json.JSONDecodeError):
    whole = False
  return (data, b'') if whole else (data[:end], rest)
