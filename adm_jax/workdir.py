"""Ownership of a directory that a run writes (its checkpoints, metrics or sample parts).

`WorkdirLock(directory, mode)` takes an advisory lock (fcntl.flock on DIRECTORY/.adm_jax.lock)
and writes an owner record into it: host, pid, mode, start time and command. A second run
that wants the same directory fails at once with `WorkdirInUseError` naming the holder. The
kernel drops the lock when its process dies (even with kill -9); a record left by a dead
process on this host is taken over with a warning. Only process 0 of a multi-host run locks
(the others write nothing there); a `gs://` or other remote directory cannot be locked and
is used unlocked with a warning.
"""

import datetime
import errno
import json
import logging
import os
import socket
import sys
from typing import Any, Dict, Optional

try:
  import fcntl
except ImportError:  # not on POSIX
  fcntl = None

from adm_jax import files

log = logging.getLogger(__name__)

LOCK_FILE = ".adm_jax.lock"


class WorkdirInUseError(RuntimeError):
  """Another running process owns the directory."""


def _pid_alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True
  return True


def _describe(owner: Dict[str, Any]) -> str:
  return (
    f"{owner.get('mode', 'a run')} (pid {owner.get('pid', '?')} on {owner.get('host', '?')}, "
    f"started {owner.get('started', '?')})"
  )


def _first_missing(directory: str) -> Optional[str]:
  """The outermost directory of `directory`'s path that does not exist yet (None: it exists)."""
  path, missing = os.path.abspath(directory), None
  while not os.path.exists(path):
    missing, parent = path, os.path.dirname(path)
    if parent == path:
      break
    path = parent
  return missing


def check_writable(directory: str) -> None:
  """Raises PermissionError / NotADirectoryError with the path when `directory` cannot hold a
  run's files. Nothing is left behind: a missing directory is created to try, then removed."""
  if "://" in directory:
    return
  if os.path.exists(directory) and not os.path.isdir(directory):
    raise NotADirectoryError(f"--workdir {directory} exists and is not a directory")
  missing = _first_missing(directory)
  if missing:
    make_directory(directory)
    _remove_up_to(directory, missing)
  elif not os.access(directory, os.W_OK | os.X_OK):
    raise PermissionError(f"--workdir {directory} is not writable")


def make_directory(directory: str) -> None:
  """os.makedirs, its failure said in one line naming the directory."""
  try:
    os.makedirs(directory, exist_ok=True)
  except OSError as e:
    raise PermissionError(f"cannot create --workdir {directory}: {e.strerror}") from None


def _remove_up_to(directory: str, outermost: str) -> None:
  """Removes `directory` and its empty parents up to `outermost` (directories made here)."""
  path = os.path.abspath(directory)
  try:
    while True:
      os.rmdir(path)
      if path == outermost:
        return
      path = os.path.dirname(path)
  except OSError:
    pass


class WorkdirLock:
  """Context manager owning `directory` for one run (see the module docstring)."""

  def __init__(self, directory: str, mode: str, process_index: int = 0):
    self.directory = directory
    self.mode = mode
    self.enabled = process_index == 0 and fcntl is not None and "://" not in directory
    self._file = None
    self._created = None  # the outermost directory the lock made (a refused run removes it)
    if process_index == 0 and "://" in directory:
      log.warning(
        "%s is a remote directory: it cannot be locked; make sure no other run writes there",
        directory,
      )

  @property
  def path(self) -> str:
    return os.path.join(self.directory, LOCK_FILE)

  def owner(self) -> Optional[Dict[str, Any]]:
    """The owner record in the lock file, if any."""
    try:
      with open(self.path) as f:
        text = f.read().strip()
      return json.loads(text) if text else None
    except (OSError, ValueError):
      return None

  def acquire(self) -> "WorkdirLock":
    if not self.enabled:
      return self
    self._created = _first_missing(self.directory)
    check_writable(self.directory)
    make_directory(self.directory)
    handle = open(self.path, "a+")  # pylint: disable=consider-using-with
    try:
      fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      handle.close()
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      holder = self.owner() or {}
      raise WorkdirInUseError(
        f"{self.directory} is in use by {_describe(holder)}; wait for it to finish, stop it, "
        "or use another directory"
      ) from None
    previous = self.owner()
    if (
      previous
      and previous.get("host") == socket.gethostname()
      and previous.get("pid") != os.getpid()
    ):
      if not _pid_alive(int(previous.get("pid", -1))):
        log.warning(
          "taking over %s: its last owner, %s, is no longer running",
          self.directory,
          _describe(previous),
        )
    record = {
      "host": socket.gethostname(),
      "pid": os.getpid(),
      "mode": self.mode,
      "started": datetime.datetime.now().isoformat(timespec="seconds"),
      "command": " ".join(sys.argv),
    }
    fd = handle.fileno()
    try:  # unbuffered, so that a failed write leaves nothing to flush
      os.ftruncate(fd, 0)
      os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
    except OSError as e:
      os.ftruncate(fd, 0)
      handle.close()
      if files.is_out_of_space(e):
        raise files.out_of_space(handle.name, "the directory's owner record") from e
      raise
    self._file = handle
    return self

  def release(self) -> None:
    if self._file is not None:
      self._file.seek(0)
      self._file.truncate()  # no owner any more
      self._file.flush()
      fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
      self._file.close()
      self._file = None

  def __enter__(self):
    return self.acquire()

  def __exit__(self, exc_type, exc, tb):
    self.release()
    if exc_type is not None and self._created:
      self._remove_if_untouched()
    return False

  def _remove_if_untouched(self) -> None:
    """A run refused before it wrote anything leaves no directory behind (the lock made it)."""
    try:
      if os.listdir(self.directory) != [LOCK_FILE]:
        return
      os.remove(self.path)
    except OSError:
      return
    _remove_up_to(self.directory, self._created)
