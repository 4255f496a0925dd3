"""Writing outputs safely: to new files, atomically, never over an input or a user's folder.

Every writer in the engine goes through :func:`atomic_path` (one file) or :func:`atomic_dir`
(a folder written as a whole). The data goes to a hidden temporary file or folder beside the
destination and is renamed into place only when complete, so a crash or an error never leaves
a half-written result.

Folders: :func:`atomic_dir` replaces an existing folder only when this tool wrote it (it holds
the marker file :data:`MARKER`) or when it is empty; a user's folder is refused with one line,
never deleted. Temporary names carry the writing process's id and host, so a later run removes
the leftovers of a killed one (and puts back a result that a kill left set aside).

Outputs may hold patients' names and identifiers: files are written readable by their owner
only (0600, folders 0700).

Call :func:`check_output_dir` / :func:`check_output_file` before the work starts: they refuse
an output that could not be written (below a file, on a read-only or virtual file system, the
current folder) so that a long analysis does not end in an error.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import socket
import stat
import tempfile
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from . import __version__
from .errors import InputError, MESCCError

logger = logging.getLogger(__name__)

MARKER = ".mescc-output"
"""File that marks a folder written by mescc (only such folders are ever replaced)."""

_MULTI_SUFFIXES = (".nii.gz", ".seg.nrrd", ".mrk.json")
_FILE_MODE = 0o600
_DIR_MODE = 0o700


class OutputError(InputError):
    """An output cannot be written where the user asked (refused, or the write failed)."""


# ---------------------------------------------------------------------------------------
# Checks before the work
# ---------------------------------------------------------------------------------------
def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or (a.exists() and b.exists() and a.samefile(b))
    except OSError:
        return False


def guard_outputs(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]):
    """Raise :class:`InputError` when an output would overwrite an input.

    That is: the output is an input, lies inside an input folder, or is a folder (replaced as
    a whole by :func:`atomic_dir`) that contains an input.
    """
    ins = [Path(p).resolve() for p in inputs if p is not None]
    for out in outputs:
        if out is None:
            continue
        out_path = Path(out).resolve()
        for inp in ins:
            if (
                _same_file(out_path, inp)
                or (inp.is_dir() and inp in out_path.parents)
                or out_path in inp.parents
            ):
                raise InputError(
                    "the output would overwrite an input",
                    path=out,
                    hint="choose a new output path",
                )


def _marked(folder: Path) -> bool:
    marker = folder / MARKER
    return marker.is_file() and not marker.is_symlink()


def _kind(path: Path) -> str | None:
    """``"link"``, ``"dir"``, ``"other"`` or None (absent), from one ``lstat``: a folder that
    another writer is swapping at that moment is seen either before or after, never half."""
    try:
        mode = os.lstat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):  # absent, or below a file
        return None
    if stat.S_ISLNK(mode):
        return "link"
    return "dir" if stat.S_ISDIR(mode) else "other"


def written_by_us(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` may be replaced: it holds the :data:`MARKER` file, lies directly in a
    folder that does (a part of an output, such as ``models/``), or is empty."""
    folder = Path(folder)
    if folder.is_symlink() or not folder.is_dir():
        return False
    if _marked(folder) or _marked(folder.parent):
        return True
    try:
        with os.scandir(folder) as entries:
            return next(entries, None) is None
    except FileNotFoundError:  # another writer is swapping it right now
        return False


def _check_name(path: Path, given) -> None:
    text = os.fspath(given)
    if not text or path.name in ("", ".", ".."):
        raise OutputError(
            "is not a new file or folder name", path=given, hint="give a path such as results/case1"
        )


def _check_writable_parent(path: Path, given) -> None:
    """The nearest existing ancestor of ``path`` must be a folder where we can create files."""
    ancestor = path.parent
    while not ancestor.exists() and not ancestor.is_symlink():
        if ancestor == ancestor.parent:
            break
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise OutputError(
            f"cannot be written: {ancestor} is not a folder", path=given, hint="choose another path"
        )
    try:  # the real test: create (and remove) an entry where the output will go
        probe = tempfile.mkdtemp(prefix=".mescc-probe.", dir=ancestor)
        os.rmdir(probe)
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise OutputError(f"cannot be written here: {reason}", path=given) from None


def check_output_dir(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a folder output that :func:`atomic_dir` would not write.

    Refused: ``.``/``..`` and any folder holding the current one, a symbolic link, a file, a
    folder not written by mescc (no :data:`MARKER`) that is not empty, and a place where
    nothing can be created (below a file, read-only, ``/proc``...).
    """
    given = path
    path = Path(path)
    _check_name(path, given)
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise OutputError(
            "is the current folder or holds it", path=given, hint="give a new folder for the output"
        )
    kind = _kind(path)
    if kind == "link":
        raise OutputError(
            "is a symbolic link", path=given, hint="give the folder itself, or a new folder"
        )
    if kind is not None:
        if kind != "dir":
            raise OutputError("exists and is not a folder", path=given)
        if not written_by_us(path) and _kind(path) is not None:
            raise OutputError(
                f"exists and was not written by mescc (no {MARKER} file): refusing to replace it",
                path=given,
                hint="give a new folder, or empty this one yourself",
            )
    _check_writable_parent(resolved, given)
    return path


def check_output_file(path: str | os.PathLike) -> Path:
    """Refuse, before any work, a file output that could not be written (see :func:`check_output_dir`)."""
    given = path
    path = Path(path)
    _check_name(path, given)
    if path.is_dir():
        raise OutputError("is a folder", path=given, hint="give a file name")
    if path.exists() and not path.is_file():
        raise OutputError("exists and is not a regular file", path=given)
    _check_writable_parent(path.resolve(), given)
    return path


# ---------------------------------------------------------------------------------------
# Temporary names, leftovers of killed runs
# ---------------------------------------------------------------------------------------
def _owner_tag() -> str:
    host = socket.gethostname().replace(".", "_").replace("@", "_") or "host"
    return f"{os.getpid()}@{host}"


def _suffix(path: Path) -> str:
    name = path.name
    for multi in _MULTI_SUFFIXES:
        if name.endswith(multi):
            return multi
    return path.suffix


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, ValueError):
        return True  # someone else's process, or not a pid: leave it alone
    return True


def _stale_siblings(final: Path) -> list[tuple[Path, str]]:
    """Temporary entries beside ``final`` left by dead processes of this host: (path, kind)."""
    prefix = f".{final.name}."
    host = _owner_tag().split("@", 1)[1]
    found = []
    try:
        entries = list(os.scandir(final.parent))
    except OSError:
        return found
    for entry in entries:
        if not entry.name.startswith(prefix):
            continue
        rest = entry.name[len(prefix) :]
        tag = rest.split(".", 1)[0]
        pid_text, _, tag_host = tag.partition("@")
        if tag_host != host or not pid_text.isdigit() or _process_alive(int(pid_text)):
            continue
        if rest.endswith(".old"):
            found.append((Path(entry.path), "old"))
        elif ".part" in rest:
            found.append((Path(entry.path), "part"))
    return found


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def clean_leftovers(final: str | os.PathLike) -> None:
    """Remove what a killed writer of ``final`` left; put back a result it had set aside."""
    final = Path(final)
    for path, kind in _stale_siblings(final):
        if kind == "old" and not final.exists() and not final.is_symlink():
            with contextlib.suppress(OSError):  # killed between its two renames: put it back
                os.rename(path, final)
            continue
        _remove(path)


# ---------------------------------------------------------------------------------------
# Native messages and write failures
# ---------------------------------------------------------------------------------------
_native_lock = threading.Lock()
_native_depth = 0
_native_saved: list = []


@contextlib.contextmanager
def _native_stderr_captured() -> Iterator[None]:
    """Send the C-level stderr (VTK, ITK, HDF5 messages) to a scratch file while writing.

    A failing writer prints dozens of lines that name temporary paths; the failure itself is
    reported as one sentence by :func:`_write_failure`. The messages go to the log (debug).
    """
    global _native_depth
    if os.name != "posix":
        yield
        return
    with _native_lock:
        if _native_depth == 0:
            try:
                scratch = tempfile.TemporaryFile()
                saved = os.dup(2)
                os.dup2(scratch.fileno(), 2)
                _native_saved[:] = [saved, scratch]
            except OSError:
                _native_saved[:] = []
        _native_depth += 1
    try:
        yield
    finally:
        with _native_lock:
            _native_depth -= 1
            if _native_depth == 0 and _native_saved:
                saved, scratch = _native_saved
                os.dup2(saved, 2)
                os.close(saved)
                with contextlib.suppress(OSError):
                    scratch.seek(0)
                    text = scratch.read().decode("utf-8", "replace").strip()
                    if text:
                        logger.debug("messages of the writers:\n%s", text)
                scratch.close()
                _native_saved[:] = []


def _free_bytes(path: Path) -> int | None:
    while not path.exists() and path != path.parent:
        path = path.parent
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return None


def _write_failure(final: Path, tmp: Path, exc: BaseException) -> OutputError:
    """One sentence naming the destination (not the hidden temporary) and the reason."""
    no_space = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
    if isinstance(exc, OSError) and exc.errno in no_space:
        reason = "no space left on the device"
    elif isinstance(exc, OSError) and exc.errno == errno.EFBIG:
        reason = "the file is larger than this system allows"
    elif isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        reason = (lines[-1] if lines else type(exc).__name__).replace(str(tmp), str(final))
    free = _free_bytes(final.parent)
    if free is not None and free < 1 << 20 and "space" not in reason:
        reason = f"no space left on the device ({reason})"
    return OutputError(f"could not be written: {reason}", path=final)


def _owner_only(root: Path) -> None:
    """Files 0600 and folders 0700 below ``root`` (outputs may name the patient)."""
    if root.is_dir():
        for folder, _dirs, files in os.walk(root):
            os.chmod(folder, _DIR_MODE)
            for name in files:
                with contextlib.suppress(FileNotFoundError):
                    os.chmod(os.path.join(folder, name), _FILE_MODE)
    else:
        os.chmod(root, _FILE_MODE)


@contextlib.contextmanager
def _parent_locked(parent: Path) -> Iterator[None]:
    """Serialise the final renames of writers of the same folder (no file is created)."""
    try:
        import fcntl
    except ImportError:  # Windows: no lock, the renames below retry instead
        yield
        return
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


# ---------------------------------------------------------------------------------------
# Atomic writers
# ---------------------------------------------------------------------------------------
def _make_parent(final: Path) -> None:
    try:
        final.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot be written here: {exc.strerror or exc}", path=final) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds.

    The temporary name keeps the file's extension so that writers choosing a format from
    the name (SimpleITK, vtk) pick the right one. Failures to write become one
    :class:`OutputError` naming ``path``.
    """
    final = Path(path)
    _make_parent(final)
    clean_leftovers(final)
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{final.name}.{_owner_tag()}.",
            suffix=f".part{_suffix(final)}",
            dir=final.parent,
        )
    except OSError as exc:
        raise _write_failure(final, final, exc) from None
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with _native_stderr_captured():
            try:
                yield tmp
                _owner_only(tmp)
                os.replace(tmp, final)
            except MESCCError:
                raise
            except (OSError, RuntimeError) as exc:  # RuntimeError: ITK's writers
                raise _write_failure(final, tmp, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def _marker_text() -> str:
    return json.dumps({"written_by": "mescc", "version": __version__}) + "\n"


def _write_marker(folder: Path) -> None:
    (folder / MARKER).write_text(_marker_text(), encoding="utf-8")


def _swap_in(tmp: Path, final: Path) -> None:
    """Move ``tmp`` onto ``final``, setting a folder of ours aside first (never a user's)."""
    for _ in range(5):
        old = None
        with _parent_locked(final.parent):
            if final.exists() or final.is_symlink():
                if not written_by_us(final):
                    raise OutputError(
                        f"exists and was not written by mescc (no {MARKER} file): refusing to replace it",
                        path=final,
                        hint="give a new folder, or empty this one yourself",
                    )
                old = final.with_name(f".{final.name}.{_owner_tag()}.{secrets.token_hex(4)}.old")
                os.rename(final, old)
            try:
                os.rename(tmp, final)
            except OSError as exc:
                if old is not None:
                    os.rename(old, final)  # put the previous result back
                if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                    continue  # another writer (without the lock) got there first: try again
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise OutputError("is being written by another process at the same time", path=final)


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike, *, part_of_output: bool = False) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes ``path`` if the block succeeds.

    An existing folder at ``path`` is replaced only after the new one is complete, and only
    when mescc wrote it (see :func:`written_by_us`) or it is empty; anything else is refused
    before the block runs. The new folder gets the marker, unless it is ``part_of_output``:
    a subfolder (``models/``) of an output folder that carries the marker itself.
    """
    final = Path(path)
    kind = _kind(final)
    if kind in ("link", "other"):
        raise OutputError("exists and is not a folder", path=final)
    if kind == "dir" and not written_by_us(final):
        check_output_dir(final)  # raises the one-line refusal (unless it was being swapped)
    _make_parent(final)
    clean_leftovers(final)
    try:
        tmp = Path(
            tempfile.mkdtemp(
                prefix=f".{final.name}.{_owner_tag()}.", suffix=".part", dir=final.parent
            )
        )
    except OSError as exc:
        raise _write_failure(final, final, exc) from None
    try:
        with _native_stderr_captured():
            try:
                yield tmp
                if not part_of_output:
                    _write_marker(tmp)
                _owner_only(tmp)
                _swap_in(tmp, final)
            except OutputError as exc:
                if exc.path is not None and str(tmp) in exc.path:  # a file inside the folder
                    raise OutputError(
                        exc.message.replace(str(tmp), str(final)), path=final
                    ) from None
                raise
            except MESCCError:
                raise
            except (OSError, RuntimeError) as exc:
                raise _write_failure(final, tmp, exc) from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def claim_dir(path: str | os.PathLike) -> Path:
    """Create (or reuse) a folder that mescc fills piece by piece, and mark it as ours.

    For outputs such as ``mescc demo``'s folder, whose parts are each written atomically.
    Refused like :func:`check_output_dir` when it exists and is not ours.
    """
    folder = check_output_dir(path)
    _make_parent(folder)
    folder.mkdir(mode=_DIR_MODE, exist_ok=True)
    if not (folder / MARKER).is_file():
        write_text(folder / MARKER, _marker_text())
    return folder


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def save_image(image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a SimpleITK image and read it back whole (for use inside :func:`atomic_dir`).

    ITK's NIfTI writer only prints a message when the disk fills and leaves a truncated file;
    reading the file back (gzip checks its CRC) turns that into an error.
    """
    import SimpleITK as sitk

    sitk.WriteImage(image, str(path), compress)
    try:
        back = sitk.ReadImage(str(path))
    except RuntimeError:
        raise OSError(errno.EIO, "the written file is incomplete", str(path)) from None
    if back.GetSize() != image.GetSize():
        raise OSError(errno.EIO, "the written file is incomplete", str(path))
    return Path(path)


def write_image(image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a SimpleITK image atomically (format from the extension), checked by reading back."""
    with atomic_path(path) as tmp:
        save_image(image, tmp, compress=compress)
    return Path(path)
