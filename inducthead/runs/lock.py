"""The lock file of a run directory: an OS file lock (`flock`) plus the owner's PID@host.

A second process is refused while the owner lives; the kernel releases the lock when the owner
dies (even by kill -9), so a stale lock is taken over without races. On filesystems without
`flock` the PID alone decides.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from inducthead.runs.files import pid_alive

try:
    import fcntl
except ImportError:  # Windows: the PID in the lock file alone decides
    fcntl = None


class LockError(ValueError):
    """The directory is locked by another live process."""


def _lock_owner(fd: int) -> str:
    os.lseek(fd, 0, os.SEEK_SET)
    return os.read(fd, 256).decode(errors="replace").strip()


def _flock(fd: int) -> bool | None:
    """Try to take the OS lock: True taken, False held by another process, None unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:  # ENOLCK, EOPNOTSUPP, ...: this filesystem has no flock
        return None
    return True


def _owner_alive(owner: str) -> bool:
    """Whether the `PID@host` written in a lock file may still be running (unknown host: yes)."""
    pid, _, host = owner.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    return int(pid) != os.getpid() and pid_alive(int(pid))


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_ino, a.st_dev) == (b.st_ino, b.st_dev)


def acquire_lock(lock: Path, what: Path) -> int:
    """Take the lock file `lock` of directory `what`; returns its open descriptor (close it to
    release, after `release_lock`). Raises LockError naming the owner if it is held."""
    me = f"{os.getpid()}@{socket.gethostname()}"
    for _ in range(20):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
        except OSError as e:
            raise LockError(f"cannot create the lock file {lock} ({e}).") from None
        taken = _flock(fd)
        if taken is not False and not _same_file(fd, lock):
            os.close(fd)  # the file was replaced or removed between open and flock: retry
            continue
        owner = _lock_owner(fd)
        if taken is False or (owner and owner != me and _owner_alive(owner)):
            os.close(fd)
            raise LockError(
                f"{what} is locked by process {owner or '(starting)'}, which is still training "
                f"into it. Wait for it, or delete {lock} if you are sure it has stopped."
            )
        # Ours: nobody holds the OS lock and any PID written in the file is dead (stale lock).
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, me.encode())
        return fd
    raise LockError(f"could not take the lock {lock}: it keeps changing under us.")


def release_lock(lock: Path, fd: int) -> None:
    """Remove the lock file if it is still ours, then drop the OS lock."""
    try:
        if _same_file(fd, lock):
            lock.unlink(missing_ok=True)
    finally:
        os.close(fd)
