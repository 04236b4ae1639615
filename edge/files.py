"""Files we write: private from their first byte, atomic and durable, named only by names
we issued, and an exclusive lock file held for the life of a process.

Every file edge-recorder makes is 0600 and every folder 0700, whatever the umask: a file is
created with ``O_CREAT | O_EXCL`` and mode 0600 (the umask can only narrow it, and
``fchmod`` then makes it exactly 0600), never by opening a name that may already exist; a
folder and each missing parent is made 0700 (``Path.mkdir(parents=True)`` would give the
parents the umask's mode). SQLite copies the mode of a database to its ``-wal``, ``-shm``
and ``-journal`` files, so ``private_db`` creates the database file first. A process-wide
umask would do the same for the files SQLite makes, but it is a hidden global that every
thread shares, and a test or an embedding program can change it behind our back; the
modes here hold whatever it is.

A name that comes from data (a clip's id in a sealed clip, an activation id, a model name)
becomes part of a file name only if it has the shape we issue (``CLIP_ID``) or after
``name_part`` has replaced everything but letters, digits, ``_`` and ``-``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
from pathlib import Path

from edge.errors import EdgeError, StateLockedError

PRIVATE_FILE = 0o600
PRIVATE_DIR = 0o700

CLIP_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
"""The ids we issue for clips and activations: ``str(uuid.uuid4())``."""
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")
"""A file name from a manifest we ship (model files)."""
ENTRY_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,63}")
"""The ids the outbox accepts for its spool files (clip ids, and test ids); no dot or
slash, so ``<id>.clip`` is a plain name in the spool."""


class OutputExistsError(EdgeError):
    """A command would replace a file that already exists."""


class ForeignTreeError(EdgeError):
    """A folder of ours belongs to another user."""


def is_clip_id(text: object) -> bool:
    """Whether ``text`` has the shape of the clip and activation ids we issue (a UUID)."""
    return isinstance(text, str) and CLIP_ID.fullmatch(text) is not None


def is_plain_name(text: object) -> bool:
    """Whether ``text`` is one plain file name: ASCII letters, digits, ``_``, ``.`` and
    ``-``, not starting with a dot (so no path, no ``..``, no hidden file, no NUL)."""
    return isinstance(text, str) and PLAIN_NAME.fullmatch(text) is not None


def name_part(text: str, limit: int = 40) -> str:
    """``text`` made safe to put inside a file name we build: every run of characters other
    than ASCII letters, digits, ``_`` and ``-`` becomes one ``_`` (no dot, slash or NUL).

    >>> name_part("../../etc/passwd")
    '_etc_passwd'
    """
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:limit] or "_"


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private_dir(path: Path) -> Path:
    """Make ``path`` a folder, it and each missing parent 0700 whatever the umask; a folder
    that exists is left as it is (it may be the owner's). Returns ``path``."""
    missing = []
    p = Path(path)
    while not os.path.lexists(p) and p != p.parent:
        missing.append(p)
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, PRIVATE_DIR)
        except FileExistsError:
            continue  # made meanwhile by another thread or process
        fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            os.fchmod(fd, PRIVATE_DIR)  # the umask may have taken more than group and other
        finally:
            os.close(fd)
    if not os.path.isdir(path):
        raise NotADirectoryError(errno.ENOTDIR, "not a folder", str(path))
    return path


def create_private(path: Path, flags: int = os.O_WRONLY) -> int:
    """A new file at ``path``, 0600 from its first byte; ``FileExistsError`` if anything,
    a symlink included, is there already. Returns the open descriptor."""
    fd = os.open(path, flags | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                 PRIVATE_FILE)
    try:
        os.fchmod(fd, PRIVATE_FILE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: Path, flags: int = os.O_RDWR) -> int:
    """Open the file at ``path``, creating it 0600 when missing; never through a symlink."""
    try:
        return create_private(path, flags)
    except FileExistsError:
        return os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC)


def private_db(path: Path) -> Path:
    """Create a SQLite database file (and its folder) private before SQLite opens it, so
    its ``-wal``, ``-shm`` and ``-journal`` files, which SQLite makes with the database's
    mode, are private too. Returns ``path``. SQLite's in-memory database (``:memory:``)
    has no file: none is made."""
    if str(path) == ":memory:":
        return path
    private_dir(path.parent)
    with contextlib.suppress(FileExistsError):
        os.close(create_private(path))
    return path


SQLITE_CACHE = "PRAGMA cache_size = -64"
"""Run on every SQLite connection the daemon keeps open: a page cache of at most 64 KiB
(the kernel's file cache still holds the pages). SQLite's default, 2 MiB a connection,
filled with the growing activation log over days: in the soak about 18 kB an audio hour
of the daemon's RSS, for the first 100 hours or so."""


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def atomic_write(path: Path, data: bytes, mode: int = PRIVATE_FILE) -> None:
    """Write ``data`` to ``path`` (0600) so that a crash leaves either the old file or the
    new one. A symlink at ``path`` is replaced, never followed."""
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)  # left by a dead process that had our pid
    try:
        fd = create_private(tmp)
        try:
            if mode != PRIVATE_FILE:
                os.fchmod(fd, mode)
            _write_all(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        # a full disk must not be made fuller by the half-written temp file
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_output(path: Path, data: bytes, force: bool = False) -> None:
    """Write a command's output file (0600); an existing file, or a symlink, is replaced
    only with ``force`` (``--force``)."""
    if force:
        atomic_write(path, data)
        return
    try:
        fd = create_private(path)
    except FileExistsError:
        raise OutputExistsError(f"{path} exists; give --force to replace it, or another "
                                "output") from None
    try:
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def check_owned(path: Path, what: str) -> None:
    """Refuse a folder of ours that belongs to another user than the one running us: an
    admin under sudo must not delete through a tree the service user controls, nor leave
    root-owned files in it."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    me = os.geteuid()
    if st.st_uid == me:
        return
    owner = _user_name(st.st_uid)
    if me == 0:
        raise ForeignTreeError(f"{what} {path} belongs to {owner}: run as the service user "
                               f"(sudo -u {owner} edge ...)")
    raise ForeignTreeError(f"{what} {path} belongs to {owner}, not to you ({_user_name(me)}):"
                           " run as the service user, or set a state_dir of your own")


def _user_name(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


class LockFile:
    """``flock`` on ``path``: one holder at a time, released on close, kill or crash."""

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> LockFile:
        private_dir(self.path.parent)
        fd = open_private(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StateLockedError(f"{self.what} is running (it holds {self.path}); stop it "
                                   "first, e.g. `sudo systemctl stop edge-recorder`") from None
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> LockFile:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
