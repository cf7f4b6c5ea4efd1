"""Path safety: names that come from configs, presets or users never leave the directory given.

Every file inducthead writes below a directory the user chose (run dirs, report outputs, sweep
cells) is built with `safe_child(root, name)`, which refuses a name that could point anywhere
else: empty, `.` or `..`, absolute, containing a path separator or a NUL byte, or resolving
outside `root` through a symbolic link already on disk. `sanitize_name` turns free text (a
`model_name`, a sweep value) into a name `safe_child` accepts.

>>> safe_child("runs", "demo")          # Path("runs/demo")
>>> safe_child("runs", "../etc")        # ValueError naming the name and the directory
>>> sanitize_name("../my model/v2")     # "my_model_v2"
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_SEPARATORS = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._+=@,-]+")
MAX_NAME_LENGTH = 200


class UnsafePathError(ValueError):
    """A name would put a file outside the directory it belongs in."""


def check_name(name: str, what: str = "name") -> str:
    """Return `name` if it is a single, plain path component; raise UnsafePathError otherwise.

    `what` says where the name came from (e.g. "sweep cell name"), for the error message."""
    if not isinstance(name, str):
        raise UnsafePathError(f"{what} must be a string, got {type(name).__name__}.")
    problem = None
    if name in ("", ".", ".."):
        problem = "it is empty, '.' or '..'"
    elif "\x00" in name:
        problem = "it contains a NUL byte"
    elif any(sep in name for sep in _SEPARATORS):
        problem = "it contains a path separator"
    elif os.path.isabs(name) or (len(name) >= 2 and name[1] == ":" and name[0].isalpha()):
        problem = "it is an absolute path"
    elif len(name) > MAX_NAME_LENGTH:
        problem = f"it is longer than {MAX_NAME_LENGTH} characters"
    if problem:
        raise UnsafePathError(
            f"{what} {name!r} is not a plain file name ({problem}); names may not contain '/', "
            "'\\', '..' or be absolute, so nothing is written outside the directory given."
        )
    return name


def safe_child(root: str | os.PathLike, *names: str, what: str = "name") -> Path:
    """`root / name1 / name2 ...`, refusing any name that is not a plain file name and any result
    that resolves (through symbolic links already on disk) outside `root`."""
    root = Path(root)
    path = root
    for name in names:
        path = path / check_name(name, what)
    base = root.resolve()
    target = path.resolve()  # follows links that exist; a missing tail stays lexical
    if target != base and base not in target.parents:
        raise UnsafePathError(
            f"{what} {'/'.join(names)!r} resolves to {target}, outside {base} (a symbolic link "
            "points elsewhere); refusing to write there."
        )
    return path


def sanitize_name(text: str, default: str = "run") -> str:
    """A file name made from free text: runs of characters other than letters, digits and
    `._+=@,-` (and runs of dots) become one `_`, leading and trailing dots and underscores are
    dropped (no hidden files, no `..`), and the result is cut to MAX_NAME_LENGTH characters.
    Empty results become `default`."""
    name = _UNSAFE_CHARS.sub("_", str(text))
    name = re.sub(r"_+", "_", re.sub(r"\.{2,}", "_", name)).strip("._")
    name = name[:MAX_NAME_LENGTH].rstrip("._")
    return check_name(name or default)
