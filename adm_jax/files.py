"""Writes that never leave half a file behind, and one line when the disk or quota is full.

  with files.atomic_path(path, "sample part", resume="it resumes at this part") as tmp:
    np.savez(tmp, ...)                    # tmp sits beside path; it replaces path when complete
  files.append_line(path, line, "metrics row")   # all of the line or nothing

A write that fails for lack of space (ENOSPC, EDQUOT, EFBIG) raises `OutOfSpaceError`, whose
one-line message names the path, the free and the needed space, and says that the same command
resumes once space is freed; whatever was half-written is removed first.
"""

import contextlib
import errno
import os
import shutil
from typing import Iterator, Optional

OUT_OF_SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
# Libraries that wrap the OSError (tensorstore under orbax) keep only its text.
_OUT_OF_SPACE_TEXT = ("No space left on device", "Disk quota exceeded", "File too large")


class OutOfSpaceError(OSError):
  """A write failed for lack of space or quota (nothing half-written was kept)."""

  def __init__(self, message: str):
    super().__init__(message)
    self.errno = errno.ENOSPC


def is_out_of_space(error: Optional[BaseException]) -> bool:
  """Whether an exception (or one it was raised from) is a full disk or quota."""
  seen = set()
  while error is not None and id(error) not in seen:
    seen.add(id(error))
    if isinstance(error, OutOfSpaceError):
      return True
    if isinstance(error, OSError) and error.errno in OUT_OF_SPACE_ERRNOS:
      return True
    if any(text in str(error) for text in _OUT_OF_SPACE_TEXT):
      return True
    error = error.__cause__ or error.__context__
  return False


def free_bytes(path: str) -> Optional[int]:
  """Free bytes on the filesystem of `path` (its nearest existing parent); None if unknown."""
  path = os.path.abspath(path)
  while path and not os.path.exists(path):
    parent = os.path.dirname(path)
    if parent == path:
      return None
    path = parent
  try:
    return shutil.disk_usage(path).free
  except OSError:
    return None


def human_bytes(n: Optional[float]) -> str:
  if n is None:
    return "unknown"
  for unit in ("B", "KB", "MB", "GB", "TB"):
    if abs(n) < 1024 or unit == "TB":
      return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
    n /= 1024
  return f"{n:.1f} TB"


def out_of_space(
  path: str, what: str, needed: Optional[int] = None, resume: str = ""
) -> OutOfSpaceError:
  """The one-line error of a write of `what` to `path` that the disk or quota stopped."""
  need = f", about {human_bytes(needed)} needed" if needed else ""
  then = f" ({resume})" if resume else ""
  return OutOfSpaceError(
    f"no space left on the device (or quota) writing {what} {path}: "
    f"{human_bytes(free_bytes(path))} free{need}; free space, then run the same command "
    f"again{then}"
  )


def _remove(path: str) -> None:
  try:
    if os.path.isdir(path) and not os.path.islink(path):
      shutil.rmtree(path, ignore_errors=True)
    else:
      os.remove(path)
  except FileNotFoundError:
    pass


@contextlib.contextmanager
def atomic_path(
  path: str, what: str, needed: Optional[int] = None, resume: str = ""
) -> Iterator[str]:
  """Yields a temporary path beside `path` (same extension) to write; it replaces `path` only
  once the block finished. On any failure the temporary file is removed; a full disk raises
  OutOfSpaceError naming `path` and `what`."""
  directory = os.path.dirname(os.path.abspath(path))
  stem, ext = os.path.splitext(os.path.basename(path))
  tmp = os.path.join(directory, f".{stem}.tmp{os.getpid()}{ext}")
  try:
    os.makedirs(directory, exist_ok=True)
    yield tmp
    os.replace(tmp, path)
  except Exception as e:
    _remove(tmp)
    if is_out_of_space(e) and not isinstance(e, OutOfSpaceError):
      raise out_of_space(path, what, needed, resume) from e
    raise


def write_text(path: str, text: str, what: str) -> str:
  """Writes a whole text file atomically (JSON records, configs); returns the path."""
  with atomic_path(path, what, needed=len(text.encode())) as tmp:
    with open(tmp, "w") as f:
      f.write(text)
  return path


def append_line(path: str, line: str, what: str, resume: str = "") -> None:
  """Appends one line (newline added) entirely or not at all: a failed write is cut back off."""
  data = (line + "\n").encode()
  fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
  start = os.lseek(fd, 0, os.SEEK_END)
  try:
    view = memoryview(data)
    while view:
      view = view[os.write(fd, view) :]
  except OSError as e:
    try:
      os.ftruncate(fd, start)
    except OSError:
      pass
    if is_out_of_space(e):
      raise out_of_space(path, what, len(data), resume) from e
    raise
  finally:
    os.close(fd)
