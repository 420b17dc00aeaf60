"""File primitives for paths a less trusted party may also write: never follow a symlink, and
create every private file with its final mode in the same ``open`` (no window where it is
readable by others).

Standard library only, and no ``pathlib`` (10 ms of the supervisor's start): the supervisor (a
script run with ``python -S``) imports this module from its own directory, the agent as
``edge_agent._safefs``.

- Run directories: a task may plant a symlink or a FIFO under a name the agent or supervisor
  will open (``status.json.tmp`` pointing at a root-only file). Everything in a run directory
  is opened relative to a directory descriptor with ``O_NOFOLLOW`` and checked to be a regular
  file (or a FIFO where one is expected); a planted name is unlinked, never written through.
- Secrets at rest (the API token, configs written by ``edge-agent init``): created ``0600``
  with ``O_EXCL`` (or a temporary file renamed over the target), so no other user ever sees
  their content, even for an instant.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat

__all__ = [
    "create_file_at",
    "empty_dir",
    "open_dir",
    "private_dir",
    "put_file_at",
    "read_file_at",
    "write_file_at",
    "write_private",
]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_REWRITE_FLAGS = os.O_WRONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def open_dir(path: str | os.PathLike[str], dir_fd: int | None = None) -> int:
    """A descriptor of the directory ``path`` (its last component must not be a symlink)."""
    return os.open(path, _DIR_FLAGS, dir_fd=dir_fd)


def read_file_at(dir_fd: int, name: str, limit: int) -> bytes | None:
    """The content of the regular file ``name`` in ``dir_fd``; ``None`` when it is absent, a
    symlink, not a regular file (a FIFO never blocks us) or larger than ``limit`` bytes."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        size = 0
        while size <= limit:
            chunk = os.read(fd, min(65536, limit + 1 - size))
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
        return None if size > limit else b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes, sync: bool = True) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    if sync:
        os.fsync(fd)


def write_file_at(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
    sync: bool = True,
) -> None:
    """Atomically replace ``name`` in ``dir_fd`` with ``data``: a temporary ``name.tmp`` is
    created exclusively (whatever sat there, a planted symlink included, is unlinked first,
    never followed), given ``owner`` while still private, synced (unless ``sync`` is false: a
    file that is worthless after a power cut, such as a running attempt's inputs) and renamed
    over ``name``."""
    tmp = name + ".tmp"
    for _ in range(8):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp, dir_fd=dir_fd)
        try:
            fd = os.open(tmp, _CREATE_FLAGS, mode, dir_fd=dir_fd)
            break
        except FileExistsError:
            continue  # someone re-planted it between unlink and open: never write through it
    else:
        raise FileExistsError(f"{tmp} keeps reappearing; not writing through it")
    _fill_and_close(fd, data, owner, sync)
    os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)


def create_file_at(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write ``name`` in ``dir_fd`` where it does not exist yet (a directory just made):
    created exclusively, never followed, written (not synced), without the temporary file
    and rename of :func:`write_file_at` (which it falls back on when something is already
    there under that name)."""
    try:
        fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=dir_fd)
    except FileExistsError:
        write_file_at(dir_fd, name, data, mode=mode, owner=owner, sync=False)
        return
    _fill_and_close(fd, data, owner, False)


def _fill_and_close(fd: int, data: bytes, owner: tuple[int, int] | None, sync: bool) -> None:
    """Give a freshly created file its owner and contents; the descriptor is closed."""
    try:
        if owner is not None:
            os.fchown(fd, *owner)
        _write_all(fd, data, sync)
    finally:
        os.close(fd)


def put_file_at(
    dir_fd: int,
    name: str,
    data: bytes,
    *,
    mode: int = 0o600,
    owner: tuple[int, int] | None = None,
) -> None:
    """Write ``name`` in ``dir_fd``, rewriting in place the regular file already there (a
    reused run directory's: no inode freed and another allocated; ``data`` should not be
    empty, see below) or creating it (:func:`create_file_at`). Anything else under that
    name (a symlink, a FIFO) or a file that cannot be opened for writing goes through
    :func:`write_file_at` (unlinked, never followed). Not synced."""
    try:
        fd = os.open(name, _REWRITE_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        create_file_at(dir_fd, name, data, mode=mode, owner=owner)
        return
    except OSError:
        write_file_at(dir_fd, name, data, mode=mode, owner=owner, sync=False)
        return
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise IsADirectoryError(name)  # not reached for a symlink (O_NOFOLLOW: ELOOP)
        if owner is not None:
            os.fchown(fd, *owner)
        os.fchmod(fd, mode)
        _write_all(fd, data, sync=False)
        # Cut after writing, never opened with O_TRUNC: ext4 writes a file's pending data
        # out when it is truncated to zero (its replace-by-truncate heuristic), an I/O wait
        # each time. The file is only ever read whole (and a cut one is unparsable JSON).
        os.ftruncate(fd, len(data))
    except OSError:
        os.close(fd)
        write_file_at(dir_fd, name, data, mode=mode, owner=owner, sync=False)
        return
    os.close(fd)


def write_private(path: str | os.PathLike[str], data: bytes, *, replace: bool = False) -> None:
    """Write a secret-holding file that is ``0600`` from its creation: ``O_EXCL`` when it must
    not exist yet (``FileExistsError`` otherwise), a private temporary renamed over it when
    ``replace``."""
    directory, name = os.path.split(os.path.abspath(path))
    dir_fd = open_dir(directory)
    try:
        if replace:
            write_file_at(dir_fd, name, data)
            return
        fd = os.open(name, _CREATE_FLAGS, 0o600, dir_fd=dir_fd)
        try:
            _write_all(fd, data)
        finally:
            os.close(fd)
    finally:
        os.close(dir_fd)


def empty_dir(dir_fd: int) -> None:
    """Remove everything in the directory of ``dir_fd`` (best effort): links are removed, not
    followed, and subdirectories go through ``shutil.rmtree``'s descriptor-based walk."""
    for name in os.listdir(dir_fd):
        with contextlib.suppress(OSError):
            if stat.S_ISDIR(os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mode):
                shutil.rmtree(name, dir_fd=dir_fd)
            else:
                os.unlink(name, dir_fd=dir_fd)


def private_dir(path: str | os.PathLike[str], group: int | None = None) -> None:
    """Create ``path`` (and missing parents) and make it ``0700``; with ``group``, ``0710`` and
    that group, so processes of the group may traverse it (reach a run directory inside) but
    neither list nor change it. Refuses a symlink in place of the directory."""
    os.makedirs(path, 0o700, exist_ok=True)
    fd = open_dir(path)
    try:
        if group is not None:
            os.fchown(fd, -1, group)
        os.fchmod(fd, 0o700 if group is None else 0o710)
    finally:
        os.close(fd)
