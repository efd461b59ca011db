"""Atomic writes: every file and checkpoint folder the library writes goes through here.

* :func:`atomic_path` - one file: written to a temporary name in the destination's folder, renamed into
  place only when complete, so an interrupted write (exception, Ctrl-C, full disk) leaves the previous
  file intact.
* :func:`atomic_folder` - one folder (``save_pretrained``): built as a temporary sibling folder and swapped
  in with one rename, so a kill between two of its files can never pair new weights with an old config.
  On Linux an existing folder is exchanged with ``renameat2(RENAME_EXCHANGE)`` (macOS: ``renamex_np``
  ``RENAME_SWAP``): there is no moment at which the destination does not exist. Elsewhere it is moved
  aside, the new one renamed in, and the old one deleted (a moment without a destination; a run killed
  there leaves the old folder as ``.NAME.PID.RANDOM.old``, renamed back by the next write).
  Entries of an existing destination that the new folder does not contain (a training run's log and
  ``last/``) are carried over as hard links (copies where the file system has none).
* :func:`replace_folder` - swap a finished folder onto a destination (``segformer convert --overwrite``).

Temporary names are ``.NAME.PID.RANDOM.tmp``; one left behind by a killed process (its PID no longer
running) is removed by the next write to the same destination, and a warning names it. File permissions
are the usual ``0666`` / ``0777`` less the umask, applied by the kernel when the temporary is created
(the umask is never changed, not even for a moment).
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import secrets
import shutil
import stat
import sys
import warnings
from pathlib import Path
from typing import Callable, Iterator

__all__ = [
    "atomic_folder",
    "atomic_path",
    "atomic_write_into",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_overwrite",
    "current_umask",
    "describe_os_error",
    "os_errors_from",
    "output_overlap",
    "replace_folder",
    "temp_folder_for",
]


def check_overwrite(path: str | os.PathLike, overwrite: bool, what: str = "file") -> None:
    """Raise ``FileExistsError`` if ``path`` exists and ``overwrite`` is false."""
    if not overwrite and os.path.exists(path):
        raise FileExistsError(f"{what} {os.fspath(path)!r} already exists; pass overwrite=True to replace it")


def output_overlap(source: str | os.PathLike, output: str | os.PathLike) -> str | None:
    """How writing (or replacing) ``output`` would touch ``source``, compared as real paths (links
    resolved): ``"is"`` (the same path), ``"contains"`` (``source`` lies inside ``output``), ``"is inside"``
    (``output`` lies inside the folder ``source``); ``None`` when they are apart. The one rule by which
    commands never write over their inputs."""
    src, out = Path(os.path.realpath(source)), Path(os.path.realpath(output))
    if src == out:
        return "is"
    if out in src.parents:
        return "contains"
    if src in out.parents:
        return "is inside"
    return None


# environment faults a library may report as its own error type, with the system's text in the message
_WRITE_FAULTS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO)


@contextlib.contextmanager
def os_errors_from(path: str | os.PathLike, error_types: type[BaseException] | tuple[type[BaseException], ...]) -> Iterator[None]:
    """Turn an error of ``error_types`` (a writer's own type, e.g. TensorFlow's ``OpError`` from a SavedModel
    save) whose message carries the system's text of a write fault (disk full, file too large, quota,
    read-only, permission denied, I/O error) into that ``OSError``, naming ``path``; others pass unchanged."""
    try:
        yield
    except error_types as err:
        text = str(err)
        code = next((code for code in _WRITE_FAULTS if os.strerror(code) in text), None)
        if code is None:
            raise
        raise OSError(code, os.strerror(code), os.fspath(path)) from err


def describe_os_error(err: OSError, path: str | os.PathLike) -> str:
    """One line for an environment fault while writing ``path``: why, and the file it happened at."""
    reason = err.strerror or str(err) or type(err).__name__
    at = f" (at {os.fspath(err.filename)!r})" if err.filename is not None and os.fspath(err.filename) != os.fspath(path) else ""
    return f"cannot write {os.fspath(path)!r}: {reason}{at}"


def current_umask() -> int:
    """The process umask, read without changing it (``/proc/self/status`` on Linux, else a probe file)."""
    try:
        with open("/proc/self/status", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        probe = os.path.join(folder, "probe")
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o777))
        return 0o777 & ~stat.S_IMODE(os.stat(probe).st_mode)


def _make_parent(path: Path) -> None:
    """Create ``path``'s parent folders; a file in the way is a ``NotADirectoryError`` naming it."""
    for ancestor in (path.parent, *path.parent.parents):
        if os.path.lexists(ancestor):
            if not ancestor.is_dir():
                raise NotADirectoryError(
                    f"cannot write {os.fspath(path)!r}: {os.fspath(ancestor)!r} is a file, not a folder"
                )
            break
    path.parent.mkdir(parents=True, exist_ok=True)


def _temp_name(path: Path, suffix: str) -> Path:
    return path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.{suffix}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def _clean_stale(path: Path) -> None:
    """Remove temporaries of ``path`` left by dead processes; put back an old folder a kill left aside."""
    pattern = os.path.join(glob.escape(os.fspath(path.parent)), f".{glob.escape(path.name)}.*.*.*")
    for found in glob.glob(pattern):
        parts = os.path.basename(found)[len(path.name) + 2 :].split(".")
        if len(parts) != 3 or parts[2] not in ("tmp", "old") or not parts[0].isdigit():
            continue
        if int(parts[0]) == os.getpid() or _pid_alive(int(parts[0])):
            continue
        try:
            if parts[2] == "old" and not os.path.lexists(path):
                os.rename(found, path)
                warnings.warn(f"restored {os.fspath(path)!r} from {found!r}, left aside by a killed write", stacklevel=4)
            elif os.path.isdir(found) and not os.path.islink(found):
                shutil.rmtree(found)
                warnings.warn(f"removed {found!r}, a temporary folder left by a killed write", stacklevel=4)
            else:
                os.unlink(found)
                warnings.warn(f"removed {found!r}, a temporary file left by a killed write", stacklevel=4)
        except OSError as err:
            warnings.warn(f"could not remove {found!r}, left by a killed write ({err.strerror})", stacklevel=4)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The caller writes the whole file to the yielded path (with any library: h5py, safetensors,
    torch.save ...). If the block raises, the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    check_overwrite(path, overwrite)
    _make_parent(path)
    _clean_stale(path)
    tmp_path = _temp_name(path, "tmp")
    _create_file(tmp_path)
    try:
        mode = stat.S_IMODE(os.stat(tmp_path).st_mode)
        yield tmp_path
        _sync_file(tmp_path)
        os.chmod(tmp_path, mode)  # a writer that re-created the file may have used other permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# The three steps at which the disk is touched (environment faults are injected here in tests).
def _create_file(path: Path) -> None:
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))  # the kernel applies the umask


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)


def _sync_file(path: Path) -> None:
    with open(path, "rb+") as handle:
        os.fsync(handle.fileno())


def atomic_write_into(tmp_path: Path, data: bytes) -> None:
    """Write ``data`` to the temporary file of an :func:`atomic_path` block (through the one write step)."""
    _write_file(tmp_path, data)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, overwrite: bool = True) -> None:
    """Write ``data`` (built in memory by the caller, so no third-party writer ever meets a full disk) to
    ``path`` atomically. An environment fault is an ``OSError`` with its errno and ``filename`` set (to
    ``path`` when the system gave none); ``path`` is left as it was and no temporary remains."""
    try:
        with atomic_path(path, overwrite=overwrite) as tmp:
            _write_file(tmp, data)
    except OSError as err:
        if err.errno is not None and err.filename is None:  # a system error, not one of our messages
            err.filename = os.fspath(path)
        raise


def atomic_write_text(path: str | os.PathLike, text: str, overwrite: bool = True) -> None:
    atomic_write_bytes(path, text.encode("utf-8"), overwrite=overwrite)


# ----------------------------------------------------------------------------------------------- folders
_RENAME_EXCHANGE = 2  # linux/fs.h
_RENAME_SWAP = 2  # macOS sys/stdio.h


def _exchange(first: Path, second: Path) -> bool:
    """Swap two existing paths in one system call; ``False`` where the platform / file system cannot."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
        at_fdcwd = -100
        result = libc.renameat2(at_fdcwd, os.fsencode(first), at_fdcwd, os.fsencode(second), _RENAME_EXCHANGE)
    elif sys.platform == "darwin" and hasattr(libc, "renamex_np"):
        result = libc.renamex_np(os.fsencode(first), os.fsencode(second), _RENAME_SWAP)
    else:
        return False
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), os.fspath(second))


def replace_folder(new: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Put the finished folder ``new`` at ``dst`` (a sibling), replacing an existing ``dst`` folder.

    An existing ``dst`` is exchanged with ``new`` in one rename where the platform allows it and then
    deleted; otherwise it is moved aside (``.NAME.PID.RANDOM.old``), ``new`` renamed in, and the old one
    deleted (it is moved back if the second rename fails).
    """
    new, dst = Path(new), Path(dst)
    if not os.path.lexists(dst):
        os.rename(new, dst)
        return
    if not dst.is_dir():
        raise NotADirectoryError(f"{os.fspath(dst)!r} exists and is not a folder")
    if _exchange(new, dst):
        shutil.rmtree(new, ignore_errors=True)
        return
    old = _temp_name(dst, "old")
    os.rename(dst, old)
    try:
        os.rename(new, dst)
    except OSError:
        os.rename(old, dst)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _carry_over(src: Path, dst: Path, discard: Callable[[str], bool] | None = None) -> None:
    """Hard-link (or copy) every entry of ``src`` that ``dst`` lacks into ``dst``, recursively (top-level
    names for which ``discard(name)`` is true are left out)."""
    for entry in os.scandir(src):
        if discard is not None and discard(entry.name):
            continue
        target = dst / entry.name
        if entry.is_dir(follow_symlinks=False):
            if not target.exists():
                os.mkdir(target, stat.S_IMODE(entry.stat(follow_symlinks=False).st_mode))
            if target.is_dir() and not target.is_symlink():
                _carry_over(Path(entry.path), target)
        elif os.path.lexists(target):
            continue
        elif entry.is_symlink():
            os.symlink(os.readlink(entry.path), target)
        else:
            try:
                os.link(entry.path, target)
            except OSError:
                shutil.copy2(entry.path, target)


def _fsync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_folder_for(path: str | os.PathLike) -> Path:
    """A new empty folder ``.NAME.PID.RANDOM.tmp`` next to ``path`` (stale ones of dead processes removed)."""
    path = Path(path)
    _make_parent(path)
    _clean_stale(path)
    tmp = _temp_name(path, "tmp")
    os.mkdir(tmp, 0o777)  # the kernel applies the umask
    return tmp


@contextlib.contextmanager
def atomic_folder(
    path: str | os.PathLike, what: str = "save_directory", discard: Callable[[str], bool] | None = None
) -> Iterator[Path]:
    """Yield an empty temporary folder; on success it becomes ``path`` in one rename (module docstring).

    Write every file of the folder into the yielded one. If the block raises, it is deleted and ``path``
    is untouched. Other entries of an existing ``path`` are carried over (hard links), except top-level
    names for which ``discard(name)`` is true (files the writer owns, e.g. weight shards of an earlier save). Where no sibling
    folder can be made or renamed (the parent is read-only, ``path`` is a mount point or holds the working
    directory), the files are staged inside ``path`` and each is renamed into place: atomic per file only.
    """
    dst = Path(os.path.abspath(path))
    if os.path.lexists(dst) and not dst.is_dir():
        raise NotADirectoryError(f"{what} {os.fspath(path)!r} exists and is not a folder")
    if dst.is_symlink():
        dst = Path(os.path.realpath(dst))
    cwd = Path(os.path.realpath(os.getcwd()))
    holds_cwd = dst.is_dir() and (Path(os.path.realpath(dst)) == cwd or Path(os.path.realpath(dst)) in cwd.parents)
    if dst.is_dir() and (holds_cwd or os.path.ismount(dst) or not os.access(dst.parent, os.W_OK | os.X_OK)):
        with _staged_in_place(dst, discard) as staging:
            yield staging
        return
    tmp = temp_folder_for(dst)
    try:
        yield tmp
        if dst.is_dir():
            os.chmod(tmp, stat.S_IMODE(dst.stat().st_mode))
            _carry_over(dst, tmp, discard)
        _fsync_folder(tmp)
        replace_folder(tmp, dst)
        _fsync_folder(dst.parent)
    finally:
        if os.path.lexists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def _staged_in_place(dst: Path, discard: Callable[[str], bool] | None = None) -> Iterator[Path]:
    staging = Path(dst / f".segformer-staging.{os.getpid()}.{secrets.token_hex(4)}")
    os.mkdir(staging, 0o700)
    try:
        yield staging
        written = {entry.name for entry in staging.iterdir()}
        for entry in sorted(staging.iterdir()):
            os.replace(entry, dst / entry.name)
        if discard is not None:
            for entry in os.scandir(dst):
                if entry.name not in written and entry.is_file(follow_symlinks=False) and discard(entry.name):
                    os.unlink(entry.path)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
