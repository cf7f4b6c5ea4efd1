"""Files that are never seen half-written: atomic writes (temporary file in the same directory,
fsync, rename) and the clean-up of temporaries left by killed writers.

Test hook: when the environment variable INDUCTHEAD_TEST_SLOW_WRITE_S holds a number of seconds,
`atomic_write_bytes` sleeps that long after writing half of the temporary file and again before
the rename, so tests can kill a process in the middle of a checkpoint write
(tests/test_reliability.py). Unset (the default), it is read and ignored; it never changes what is
written.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from pathlib import Path

SLOW_WRITE_ENV = "INDUCTHEAD_TEST_SLOW_WRITE_S"
# `.{final name}.{pid}.{random}.tmp`: the temporary name `atomic_write_bytes` writes to.
TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


def _test_write_delay() -> float:
    """Seconds to pause inside a write (SLOW_WRITE_ENV; tests only, 0 when unset or invalid)."""
    try:
        return max(0.0, float(os.environ.get(SLOW_WRITE_ENV, "0") or 0))
    except ValueError:
        return 0.0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to `path` so that `path` is either the old file or the complete new one."""
    path = Path(path)
    # A unique name in the same directory (so the rename is atomic), created with the umask's
    # permissions like any other file the user writes.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    delay = _test_write_delay()
    try:
        with open(tmp, "xb") as f:
            if delay:  # tests: leave a half-written temporary file visible for a while
                f.write(data[: len(data) // 2])
                f.flush()
                time.sleep(delay)
                f.write(data[len(data) // 2 :])
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if delay:
            time.sleep(delay)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # persist the rename itself
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass  # some filesystems cannot fsync directories


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def remove_stale_temp_files(directory: Path, names: re.Pattern | None = None) -> list[Path]:
    """Delete temporary files that `atomic_write_bytes` left in `directory` when its process was
    killed (their writer's PID is no longer alive); `names` restricts the final names considered.
    Returns the files removed. Temporary files never carry a final name, so they are harmless;
    this only reclaims their space."""
    removed = []
    if not Path(directory).is_dir():
        return removed
    for tmp in Path(directory).iterdir():
        m = TEMP_NAME.match(tmp.name)
        if not m or (names is not None and not names.fullmatch(m["name"])):
            continue
        if int(m["pid"]) != os.getpid() and not pid_alive(int(m["pid"])):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:
        return True  # exists, but belongs to another user
    return True
