"""Writing outputs safely: to new files, atomically, never over an input.

Every writer in the engine goes through :func:`atomic_path`: the data is written to a
temporary file in the destination folder and renamed into place only when complete, so a
crash or an error never leaves a half-written file, and an existing file is replaced in one
step. :func:`guard_outputs` refuses an output path that is one of the inputs.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import InputError


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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _suffix(path: Path) -> str:
    name = path.name
    for multi in (".nii.gz", ".seg.nrrd", ".mrk.json"):
        if name.endswith(multi):
            return multi
    return path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; move it onto ``path`` if the block succeeds.

    The temporary name keeps the file's extension so that writers choosing a format from
    the name (SimpleITK, vtk) pick the right one.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{final.name}.", suffix=f".part{_suffix(final)}", dir=final.parent
    )
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; it becomes ``path`` if the block succeeds.

    An existing folder at ``path`` is replaced only after the new one is complete.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".part", dir=final.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700 folders
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def write_image(image, path: str | os.PathLike, *, compress: bool = True) -> Path:
    """Write a SimpleITK image atomically (format from the extension)."""
    import SimpleITK as sitk

    with atomic_path(path) as tmp:
        sitk.WriteImage(image, str(tmp), compress)
    return Path(path)
