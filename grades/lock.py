"""A directory held by one writing process: a lock file that names its holder.

``DirLock(directory).acquire()`` creates ``directory/.lock``, takes an exclusive
``flock`` on it and writes who holds it (process id, host, start time, command). The
kernel releases a ``flock`` when its process ends in any way, SIGKILL included, so:

* a second process refuses at once with :class:`DirLocked`, which names the holder;
* a lock file left by a process that died is taken over (``took_over`` names the dead
  holder) — no stale lock ever needs removing by hand;
* :meth:`DirLock.release` removes the file, so a finished directory holds no lock file.

Where the file system has no ``flock`` (some network mounts), the holder's record is
used instead: a lock of a live process on this host is respected, one of a dead process
is taken over.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import time
from pathlib import Path

LOCK_FILE = ".lock"
_NO_FLOCK = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL}


class DirLocked(RuntimeError):
    """Another live process holds the directory; ``holder`` is its record."""

    def __init__(self, directory: Path, holder: dict) -> None:
        self.directory, self.holder = directory, holder
        super().__init__(f"{directory} is in use by {describe(holder)}")


def describe(holder: dict) -> str:
    """'process 123 on host h since 2024-01-01 12:00:00 (python -m grades.train ...)'."""
    out = f"process {holder.get('pid', '?')} on host {holder.get('host', '?')}"
    if holder.get("started"):
        out += f" since {holder['started']}"
    if holder.get("command"):
        out += f" ({holder['command']})"
    return out


def pid_alive(pid) -> bool:
    """Whether a process with this id runs on this host."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def _record() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": " ".join(sys.argv)[:300]}


def _read(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    data = b""
    while chunk := os.read(fd, 65536):
        data += chunk
    try:
        doc = json.loads(data.decode("utf-8")) if data.strip() else {}
    except (UnicodeDecodeError, ValueError):
        return {"pid": None, "command": "an unreadable lock file"}
    return doc if isinstance(doc, dict) else {}


class DirLock:
    """The lock of one directory, held by this process between :meth:`acquire` and :meth:`release`."""

    def __init__(self, directory: str | os.PathLike, name: str = LOCK_FILE) -> None:
        self.directory = Path(directory)
        self.path = self.directory / name
        self.fd: int | None = None
        self.took_over: dict | None = None  # the record of a dead holder whose lock was taken over

    def __enter__(self) -> "DirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def _open(self) -> int:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            return os.open(self.path, flags, 0o644)
        except OSError as e:
            if e.errno != errno.ELOOP:
                raise
            self.path.unlink()  # a symbolic link where the lock goes: removed, never followed
            return os.open(self.path, flags, 0o644)

    def acquire(self) -> "DirLock":
        """Hold the directory, or raise :class:`DirLocked` naming the live holder."""
        if self.fd is not None:
            return self
        for _ in range(20):  # retried only when a releasing holder removed the file meanwhile
            fd = self._open()
            try:
                if not self._lock(fd):
                    raise DirLocked(self.directory, _read(fd))
                try:
                    same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    os.close(fd)
                    continue
                previous = _read(fd)
                self.took_over = previous or None
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, (json.dumps(_record()) + "\n").encode())
                os.fsync(fd)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self.fd = fd
            return self
        raise DirLocked(self.directory, {"command": "a process that keeps replacing the lock file"})

    def _lock(self, fd: int) -> bool:
        """Take the kernel lock without waiting; False when another process holds it."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX
            return self._lock_by_record(fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in _NO_FLOCK:
                return self._lock_by_record(fd)
            raise
        return True

    @staticmethod
    def _lock_by_record(fd: int) -> bool:
        held = _read(fd)
        return not (held.get("host") == socket.gethostname() and pid_alive(held.get("pid")))

    def release(self) -> None:
        """Remove the lock file and let go (nothing when not held)."""
        if self.fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        os.close(self.fd)  # closing drops the flock
        self.fd = None
