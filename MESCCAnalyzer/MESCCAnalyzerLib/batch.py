"""A cohort of studies analysed in parallel: the manifest, the runner and the cohort table.

A *manifest* is a CSV file with one row per study: ``id``, ``mri``, ``seeds`` and optionally
``t1``, ``ct``, ``pet``, ``dwi``, ``level_anchor`` (paths relative to the manifest's folder).
:func:`read_manifest` checks all of it before any work (missing column, unknown column,
missing file, duplicate or unusable id) and returns :class:`Study` records.

:func:`run_batch` sends each study to a ``dask.distributed`` client (any object with the
client's ``submit``, whose futures have ``add_done_callback``, ``result`` and ``cancel``) and
writes each one as ``mescc analyze`` does, into ``out_dir/<id>/``, atomically, with a stamp
``batch.json`` holding the sha256 of its inputs' contents and of the options
(:func:`inputs_hash`). A study whose folder already carries the same stamp is skipped, so an
interrupted run resumes where it stopped. A study that fails is reported with a one-line
message and never stops the others; a study whose worker died (or whose connection was lost)
is submitted again, up to ``retries`` times. The cohort table (:func:`cohort_table`) is read
back from every study's ``metrics.json``: one row per lesion, or per study when its metrics
have no ``lesions`` list; :func:`write_cohort` writes ``cohort.csv``, ``errors.csv`` and,
when pyarrow is installed, ``cohort.parquet``.

This module does not import dask: the command line (``mescc batch``) starts or connects to the
cluster and hands its client over.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import importlib
import importlib.util
import io
import json
import math
import os
import queue
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import SimpleITK as sitk
import vtk

from . import __version__
from .errors import Cancelled, InputError, MESCCError, printable
from .measure import surfaces
from .outputs import OutputError, atomic_path, claim_dir, clean_leftovers, guard_outputs, write_text
from .pipeline import AnalysisRequest, run_analysis, write_analysis
from .progress import CancelCallback, ProgressCallback, check

REQUIRED_COLUMNS = ("id", "mri", "seeds")
OPTIONAL_COLUMNS = ("t1", "ct", "pet", "dwi", "level_anchor")
PATH_COLUMNS = ("mri", "seeds", "t1", "ct", "pet", "dwi")
STAMP = "batch.json"
"""The file in a study's folder that says which inputs and options it was computed from."""
COHORT_CSV, COHORT_PARQUET, ERRORS_CSV = "cohort.csv", "cohort.parquet", "errors.csv"
RESERVED_NAMES = {COHORT_CSV, COHORT_PARQUET, ERRORS_CSV}
ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
FIRST_COLUMNS = ("id", "lesion", "levels", "bilsky_grade")
ERROR_COLUMNS = ("id", "line", "message", "inputs_sha256")
_CHUNK_BYTES = 1 << 20


# ---------------------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Study:
    """One row of the manifest; paths absolute (resolved against the manifest's folder)."""

    id: str
    mri: Path
    seeds: Path
    t1: Path | None = None
    ct: Path | None = None
    pet: Path | None = None
    dwi: Path | None = None  # DICOM folder, or a 4D NIfTI with its bval/bvec beside it
    level_anchor: str = ""  # "T6@X,Y,Z" (LPS mm): names the vertebral levels
    line: int = 0  # line of the manifest (1 is the header), 0 when not from a file

    def inputs(self) -> dict[str, Path]:
        """The input paths by column name, in the manifest's column order."""
        return {name: getattr(self, name) for name in PATH_COLUMNS if getattr(self, name)}


@dataclass(frozen=True)
class BatchOptions:
    """The analysis options applied to every study (part of each study's stamp)."""

    smoothing_mm: float = 0.0
    deformable: bool = False
    scene: bool = True  # write scene.mrb (needs slicer-core on the workers)

    def request(self, study: Study) -> AnalysisRequest:
        return AnalysisRequest(
            mri=study.mri,
            seeds=study.seeds,
            t1=study.t1,
            ct=study.ct,
            pet=study.pet,
            dwi=study.dwi,
            level_anchor=study.level_anchor or None,
            deformable=self.deformable,
            smoothing_mm=self.smoothing_mm,
        )


class _Problems:
    """Collects the manifest's problems; raises the first one, counting the others."""

    def __init__(self, manifest):
        self.manifest = manifest
        self.found: list[str] = []

    def add(self, text: str) -> None:
        self.found.append(text)

    def raise_if_any(self) -> None:
        if not self.found:
            return
        more = len(self.found) - 1
        message = self.found[0] + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
        raise InputError(message, path=self.manifest, hint="fix the manifest and run again")


def _where(line: int, study_id: str) -> str:
    return f"line {line}" + (f" ({study_id})" if study_id else "")


def studies_from_rows(
    rows: Iterable[Mapping[str, object]],
    base_dir: str | os.PathLike = ".",
    *,
    manifest: str | os.PathLike | None = None,
    first_line: int = 2,
) -> list[Study]:
    """Check manifest rows (mappings of column name to text) and turn them into studies.

    Relative paths are taken from ``base_dir``. Every problem is found before the first is
    raised as :class:`InputError` (naming ``manifest``): a missing or unknown column, an
    empty or unusable id, a duplicate id, an empty required cell, a missing file.
    """
    base = Path(base_dir)
    problems = _Problems(manifest)
    studies: list[Study] = []
    seen: dict[str, int] = {}
    for number, row in enumerate(rows, start=first_line):
        cells = {
            str(k).strip().lower(): ("" if v is None else str(v).strip())
            for k, v in row.items()
            if k is not None
        }
        if not any(cells.values()):
            continue  # a blank line
        study_id = cells.get("id", "")
        where = _where(number, study_id)
        if not ID_PATTERN.fullmatch(study_id) or study_id.lower() in RESERVED_NAMES:
            problems.add(
                f"{where}: the id {study_id!r} cannot name a folder (use letters, digits, "
                "'.', '_' and '-', starting with a letter or digit)"
                if study_id
                else f"{where}: the id is empty"
            )
        elif study_id.casefold() in seen:
            problems.add(
                f"{where}: duplicate id {study_id!r} (first on line {seen[study_id.casefold()]})"
            )
        else:
            seen[study_id.casefold()] = number
        paths: dict[str, Path | None] = {}
        for column in PATH_COLUMNS:
            text = cells.get(column, "")
            if not text:
                if column in REQUIRED_COLUMNS:
                    problems.add(f"{where}: the {column} cell is empty")
                paths[column] = None
                continue
            path = Path(os.path.expanduser(text))
            path = path if path.is_absolute() else base / path
            if not path.exists():
                problems.add(f"{where}: {column}: no such file or folder: {path}")
            paths[column] = Path(os.path.abspath(path))
        studies.append(
            Study(
                id=study_id,
                level_anchor=cells.get("level_anchor", ""),
                line=number,
                **paths,
            )
        )
    problems.raise_if_any()
    if not studies:
        raise InputError(
            "the manifest has no study",
            path=manifest,
            hint="add one row per study below the header",
        )
    return studies


def read_manifest(path: str | os.PathLike) -> list[Study]:
    """Read and check a manifest CSV (see the module's docstring); raises :class:`InputError`."""
    manifest = Path(path)
    try:
        text = manifest.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise InputError("no such file", path=manifest) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a CSV manifest", path=manifest) from None
    except UnicodeDecodeError:
        raise InputError(
            "not a UTF-8 text file", path=manifest, hint="save the manifest as CSV (UTF-8)"
        ) from None
    except OSError as exc:
        raise InputError(exc.strerror or str(exc), path=manifest) from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [name.strip().lower() for name in (reader.fieldnames or [])]
        rows = list(reader)
    except csv.Error as exc:
        raise InputError(f"not a readable CSV file: {exc}", path=manifest) from None
    known = (*REQUIRED_COLUMNS, *OPTIONAL_COLUMNS)
    missing = [name for name in REQUIRED_COLUMNS if name not in header]
    if missing:
        raise InputError(
            f"missing column{'s' * (len(missing) > 1)} {', '.join(missing)}"
            + (f" (the header is: {', '.join(header)})" if header else " (the file is empty)"),
            path=manifest,
            hint=f"the first line names the columns: {', '.join(known)}",
        )
    unknown = [name for name in header if name not in known]
    duplicated = sorted({name for name in header if header.count(name) > 1})
    if unknown or duplicated or any(None in row for row in rows):
        what = (
            f"unknown column{'s' * (len(unknown) > 1)} {', '.join(unknown)}"
            if unknown
            else f"column {', '.join(duplicated)} given twice"
            if duplicated
            else "a row has more cells than the header has columns"
        )
        raise InputError(what, path=manifest, hint=f"the columns are {', '.join(known)}")
    return studies_from_rows(rows, manifest.resolve().parent, manifest=manifest)


# ---------------------------------------------------------------------------------------
# Content hash and the study's stamp
# ---------------------------------------------------------------------------------------
def _hash_file(digest, path: Path) -> None:
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK_BYTES):
            digest.update(chunk)


def _hash_path(digest, path: Path) -> None:
    """Fold a file, or every file below a folder (sorted, with relative names), into digest."""
    if not path.is_dir():
        digest.update(b"file\0")
        _hash_file(digest, path)
        return
    digest.update(b"folder\0")
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        for name in sorted(files):
            file = Path(folder, name)
            digest.update(file.relative_to(path).as_posix().encode("utf-8", "surrogateescape"))
            digest.update(b"\0")
            _hash_file(digest, file)
            digest.update(b"\0")


def inputs_hash(study: Study, options: BatchOptions) -> str:
    """sha256 over the contents of the study's inputs (not their names or places), the
    options and the engine's version: two studies with the same files give the same hash."""
    digest = hashlib.sha256()
    for column, path in study.inputs().items():
        digest.update(f"{column}\0".encode())
        try:
            _hash_path(digest, path)
        except OSError as exc:
            raise InputError(
                f"cannot be read: {exc.strerror or exc}", path=exc.filename or path
            ) from None
    digest.update(f"level_anchor\0{study.level_anchor}\0".encode())
    settings = {**asdict(options), "version": __version__}
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()


def stamp_for(study: Study, options: BatchOptions, digest: str) -> dict:
    """What ``batch.json`` holds: the hash, the options, the version and the inputs used."""
    return {
        "inputs_sha256": digest,
        "options": asdict(options),
        "mescc_version": __version__,
        "inputs": {column: str(path) for column, path in study.inputs().items()},
    }


def is_complete(folder: str | os.PathLike, digest: str) -> bool:
    """Whether ``folder`` holds a finished analysis computed from inputs hashing to ``digest``."""
    folder = Path(folder)
    try:
        stamp = json.loads((folder / STAMP).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return stamp.get("inputs_sha256") == digest and (folder / "metrics.json").is_file()


# ---------------------------------------------------------------------------------------
# One study, on a worker
# ---------------------------------------------------------------------------------------
@dataclass
class StudyOutcome:
    """What became of one study in this run."""

    id: str
    status: str  # "done" (analysed now), "skipped" (already complete) or "failed"
    message: str = ""  # one line, for a failed study
    line: int = 0
    elapsed_s: float = 0.0
    peak_rss_mb: float = 0.0  # the worker process's peak resident memory so far
    worker: str = ""  # host:pid of the process that analysed it
    attempts: int = 0  # submissions (more than 1 when a worker died under it)
    # For a failure that comes from the inputs themselves (an unreadable image, a
    # registration that does not converge): their hash. The same inputs fail the same way,
    # so a re-run reports it again without analysing; other failures are tried again.
    inputs_sha256: str = ""
    earlier: bool = False  # a failure carried over from an earlier run (same inputs)


class _StampThenScene:
    """``write_analysis``'s scene hook, called inside its atomic folder: writes the study's
    stamp there (so the stamp and the results appear together), then the scene if asked."""

    def __init__(self, stamp: dict, scene_writer):
        self.stamp, self.scene_writer = stamp, scene_writer

    def __call__(self, result, scene_path: Path) -> None:
        folder = Path(scene_path).parent
        (folder / STAMP).write_text(json.dumps(self.stamp, indent=2) + "\n", encoding="utf-8")
        if self.scene_writer is not None:
            self.scene_writer(result, scene_path)


def one_line(exc: BaseException) -> str:
    """An exception as the one line the command line would print."""
    if isinstance(exc, MESCCError):
        text = str(exc)
    elif isinstance(exc, MemoryError):
        text = "not enough memory for these inputs"
    elif isinstance(exc, OSError) and exc.strerror:
        text = f"{exc.filename}: {exc.strerror}" if exc.filename else exc.strerror
    else:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        text = f"internal error: {type(exc).__name__}" + (f": {lines[-1]}" if lines else "")
    return printable(" ".join(text.split()))


def _peak_rss_mb() -> float:
    try:
        import resource  # POSIX only
    except ImportError:
        return math.nan
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux, bytes on macOS
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


# glibc's mallopt parameters (malloc.h) and the values its dynamic threshold settles at on
# 64-bit Linux (DEFAULT_MMAP_THRESHOLD_MAX, and twice that for the trim threshold).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 32 << 20
_TRIM_THRESHOLD_BYTES = 64 << 20


def _worker_malloc() -> None:
    """Undo, in this process, the small trim threshold a dask nanny gives its workers.

    The nanny starts each worker with ``MALLOC_TRIM_THRESHOLD_=65536`` (dask's
    ``distributed.nanny.pre-spawn-environ``), which also turns off glibc's dynamic mmap
    threshold: every array above 128 kB is then mapped and unmapped, its pages faulted in and
    zeroed again on each allocation. A whole-spine study took ~1M more page faults and ~2 s
    more system time (~10 %). The thresholds glibc itself would settle at are set back
    (the freed memory above 64 MB still goes back to the system). Only on glibc; nothing
    elsewhere, and nothing when the variable is not set.
    """
    if not sys.platform.startswith("linux") or "MALLOC_TRIM_THRESHOLD_" not in os.environ:
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES)
        libc.mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES)


def analyze_study(
    study: Study,
    out_dir: str,
    stamp: dict,
    options: BatchOptions,
    scene_writer=None,
    threads: int = 1,
) -> StudyOutcome:
    """Analyse one study and write ``out_dir/<id>/`` atomically (run on a worker).

    Never raises for a bad study: the failure comes back as a :class:`StudyOutcome` with its
    one-line message. ``threads`` caps ITK's and vtk's (SMP) threads (one per worker thread).
    """
    t0 = time.perf_counter()
    outcome = StudyOutcome(id=study.id, status="done", line=study.line)
    outcome.worker = f"{socket.gethostname()}:{os.getpid()}"
    _worker_malloc()
    if threads:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(int(threads))
        surfaces.enable_threads()  # its backend first: Initialize applies to the current one
        vtk.vtkSMPTools.Initialize(int(threads))
    try:
        result = run_analysis(options.request(study))
        hook = _StampThenScene(stamp, scene_writer if options.scene else None)
        # write_analysis calls the hook inside its atomic folder, after every other file.
        write_analysis(result, Path(out_dir) / study.id, scene_writer=hook)
    except Exception as exc:  # a bad study must never stop the others
        outcome.status, outcome.message = "failed", one_line(exc)
        if isinstance(exc, MESCCError) and not isinstance(exc, OutputError | Cancelled):
            outcome.inputs_sha256 = stamp["inputs_sha256"]
    outcome.elapsed_s = time.perf_counter() - t0
    outcome.peak_rss_mb = _peak_rss_mb()
    return outcome


# ---------------------------------------------------------------------------------------
# The runner
# ---------------------------------------------------------------------------------------
@dataclass
class PlannedStudy:
    study: Study
    digest: str = ""
    complete: bool = False  # its folder already holds the same inputs' results
    failed_before: str | None = None  # the message of an earlier run's failure, same inputs


def earlier_failures(out_dir: str | os.PathLike) -> dict[str, tuple[str, str]]:
    """``errors.csv`` of an earlier run: id -> (inputs' hash, message) of the failures that
    came from the inputs themselves (the others have no hash: they are tried again)."""
    try:
        text = (Path(out_dir) / ERRORS_CSV).read_text(encoding="utf-8")
        rows = list(csv.DictReader(io.StringIO(text, newline="")))
    except (OSError, ValueError, csv.Error):
        return {}
    return {
        row["id"]: (row["inputs_sha256"], row.get("message") or "")
        for row in rows
        if row.get("id") and row.get("inputs_sha256")
    }


def plan_batch(
    studies: Sequence[Study],
    out_dir: str | os.PathLike,
    options: BatchOptions = BatchOptions(),
    *,
    hash_threads: int = 4,
) -> list[PlannedStudy]:
    """Hash every study's inputs (in a few threads) and see which are already complete."""
    out = Path(out_dir)
    failures = earlier_failures(out)

    def plan(study: Study) -> PlannedStudy:
        digest = inputs_hash(study, options)
        if is_complete(out / study.id, digest):
            return PlannedStudy(study, digest, complete=True)
        earlier_digest, message = failures.get(study.id, ("", ""))
        return PlannedStudy(
            study, digest, failed_before=message if earlier_digest == digest else None
        )

    with ThreadPoolExecutor(max(1, hash_threads)) as pool:
        return list(pool.map(plan, studies))


def pending(plan: Sequence[PlannedStudy]) -> list[PlannedStudy]:
    """The studies of ``plan`` a cluster must analyse."""
    return [p for p in plan if not (p.complete or p.failed_before is not None)]


@dataclass
class CohortTable:
    """The cohort: one row per lesion (per study without lesions), and what happened."""

    columns: list[str]
    rows: list[dict]
    outcomes: list[StudyOutcome] = field(default_factory=list)

    @property
    def errors(self) -> list[StudyOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def count(self, status: str) -> int:
        return sum(o.status == status for o in self.outcomes)


def _eta_text(seconds: float) -> str:
    if not math.isfinite(seconds):
        return ""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class _Tracker:
    """Counts finished studies and reports ``progress(fraction, message)`` with time left."""

    def __init__(self, total: int, to_compute: int, progress):
        self.total, self.to_compute, self.progress = total, to_compute, progress
        self.done = self.failed = self.skipped = self.computed = 0
        self.t0 = time.perf_counter()

    def add(self, outcome: StudyOutcome) -> None:
        if outcome.status == "skipped":
            self.skipped += 1
            self.done += 1
        else:
            self.computed += 1
            self.done += outcome.status == "done"
            self.failed += outcome.status == "failed"
        self.report()

    def report(self) -> None:
        if self.progress is None:
            return
        finished = self.done + self.failed
        left = self.to_compute - self.computed
        rate = (time.perf_counter() - self.t0) / self.computed if self.computed else math.inf
        eta = _eta_text(rate * left) if left else ""
        text = f"{self.done}/{self.total} done, {self.failed} failed" + (
            f", ~{eta} left" if eta else ""
        )
        self.progress(finished / self.total if self.total else 1.0, text)


def _submit(client, planned: PlannedStudy, out_dir, options, scene_writer, attempt: int):
    stamp = stamp_for(planned.study, options, planned.digest)
    return client.submit(
        analyze_study,
        planned.study,
        str(out_dir),
        stamp,
        options,
        scene_writer,
        key=f"mescc-{planned.study.id}-{planned.digest[:12]}-{attempt}",
        pure=False,
    )


def _known_outcome(planned: PlannedStudy) -> StudyOutcome | None:
    """A study's outcome known without analysing it: complete, or failed before."""
    study = planned.study
    if planned.complete:
        return StudyOutcome(study.id, "skipped", line=study.line)
    if planned.failed_before is not None:
        return StudyOutcome(
            study.id,
            "failed",
            planned.failed_before,
            line=study.line,
            inputs_sha256=planned.digest,
            earlier=True,
        )
    return None


def run_batch(
    studies: Sequence[Study],
    client,
    out_dir: str | os.PathLike,
    *,
    options: BatchOptions = BatchOptions(),
    scene_writer=None,
    retries: int = 3,
    plan: Sequence[PlannedStudy] | None = None,
    progress: ProgressCallback | None = None,
    on_study: Callable[[StudyOutcome], None] | None = None,
    cancel: CancelCallback | None = None,
    write: bool = True,
) -> CohortTable:
    """Analyse ``studies`` on ``client``'s cluster and return the cohort table.

    Each study is written into ``out_dir/<id>/`` (atomically, with its stamp); studies whose
    folder already holds the same inputs' results are skipped. A study that fails is kept in
    the table's ``outcomes`` with its message; a study whose worker died is submitted again
    up to ``retries`` times. ``scene_writer`` (for :attr:`BatchOptions.scene`) must be
    importable on the workers. With ``write`` the tables go to ``out_dir`` as well
    (:func:`write_cohort`). ``client`` may be None when every study is already complete.
    ``on_study(outcome)`` is called as each study ends; ``progress(fraction, message)``
    reports the cohort's progress and the time left.
    """
    out = Path(out_dir)
    guard_outputs([out], [p for s in studies for p in s.inputs().values()])
    plan = list(plan) if plan is not None else plan_batch(studies, out, options)
    claim_dir(out)  # the cohort's folder: ours, filled study by study
    todo = pending(plan)
    if todo and client is None:
        raise ValueError(f"{len(todo)} studies to analyse but no client")
    tracker = _Tracker(len(plan), len(todo), progress)
    outcomes: dict[str, StudyOutcome] = {}

    def finish(outcome: StudyOutcome) -> None:
        outcomes[outcome.id] = outcome
        tracker.add(outcome)
        if on_study is not None:
            on_study(outcome)

    tracker.report()
    for planned in plan:
        known = _known_outcome(planned)
        if known is not None:
            finish(known)
    for planned in todo:
        clean_leftovers(out / planned.study.id)  # what a killed earlier run left
    if todo:
        _run_on_cluster(client, todo, out, options, scene_writer, retries, finish, cancel)
    for planned in plan:  # a worker killed while writing: its temporaries (dead process)
        clean_leftovers(out / planned.study.id)
    ordered = [outcomes[p.study.id] for p in plan]
    table = cohort_table(out, [o.id for o in ordered if o.status != "failed"], outcomes=ordered)
    if write:
        write_cohort(table, out)
    return table


def _run_on_cluster(client, todo, out, options, scene_writer, retries, finish, cancel):
    """Submit every study, collect them as they end, resubmit those whose worker died."""
    finished: queue.Queue = queue.Queue()
    by_key: dict[str, tuple[PlannedStudy, int]] = {}
    futures = {}
    lock = threading.Lock()

    def submit(planned: PlannedStudy, attempt: int) -> None:
        future = _submit(client, planned, out, options, scene_writer, attempt)
        with lock:
            by_key[future.key] = (planned, attempt)
            futures[future.key] = future
        future.add_done_callback(finished.put)

    for planned in todo:
        submit(planned, 1)
    remaining = len(todo)
    try:
        while remaining:
            try:
                future = finished.get(timeout=0.2)
            except queue.Empty:
                check(cancel)
                continue
            with lock:
                planned, attempt = by_key.pop(future.key)
                futures.pop(future.key, None)
            try:
                outcome = future.result()
            except Exception as exc:  # the task itself never raises: its worker was lost
                if attempt <= retries:
                    submit(planned, attempt + 1)
                    continue
                outcome = StudyOutcome(
                    planned.study.id,
                    "failed",
                    f"its worker was lost {attempt} times, last: {one_line(exc)}",
                )
            outcome.line = planned.study.line
            outcome.attempts = attempt
            remaining -= 1
            finish(outcome)
    except BaseException:
        with lock:
            pending_futures = list(futures.values())
        for future in pending_futures:
            with contextlib.suppress(Exception):
                future.cancel()
        raise


# ---------------------------------------------------------------------------------------
# The cohort table
# ---------------------------------------------------------------------------------------
def _words(value) -> str | None:
    """A level name or a list of them as one cell (``T7; T8``); None for anything else."""
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and all(isinstance(v, str | int) for v in value):
        return "; ".join(str(v) for v in value)
    return None


def _levels_of(values: dict) -> str:
    """The row's vertebral levels: its ``levels`` when they are names, else the study's
    ``mass_levels`` (a ``levels`` list of records is the per-level table, not this)."""
    named = _words(values.get("levels"))
    if named is not None:
        del values["levels"]
        return named
    return _words(values.get("mass_levels")) or ""


def _flatten(prefix: str, value, into: dict) -> None:
    """Nested dicts become ``a.b`` columns, lists of numbers ``a.0``, ``a.1``, lists of text
    one cell joined with ``; ``; lists of records (per-level tables) stay out of the cohort
    (they are in the study's metrics.json)."""
    if isinstance(value, list | tuple) and value and all(isinstance(v, Mapping) for v in value):
        return
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, into)
    elif isinstance(value, list | tuple):
        if value and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value):
            for index, item in enumerate(value):
                into[f"{prefix}.{index}"] = item
        elif all(not isinstance(v, Mapping | list | tuple) for v in value):
            into[prefix] = "; ".join(str(v) for v in value)
        else:
            into[prefix] = json.dumps(value)
    else:
        into[prefix] = value


def cohort_rows(study_id: str, metrics: Mapping) -> list[dict]:
    """The cohort rows of one study's ``metrics.json``: one per lesion of its ``lesions`` list
    (each a dict with ``id``, ``levels`` and its metrics, over the study's own metrics), or
    one for the study when it has no lesion list."""
    study = {k: v for k, v in metrics.items() if k != "lesions"}
    lesions = metrics.get("lesions") or [None]
    rows = []
    for lesion in lesions:
        values = dict(study)
        if lesion is not None:
            values.update({k: v for k, v in lesion.items() if k != "id"})
        row = {
            "id": study_id,
            "lesion": "" if lesion is None else str(lesion.get("id", "")),
            "levels": _levels_of(values),
            "bilsky_grade": values.pop("bilsky_grade", ""),
        }
        _flatten("", values, row)
        rows.append(row)
    return rows


def cohort_table(
    out_dir: str | os.PathLike, ids: Sequence[str], *, outcomes: Sequence[StudyOutcome] = ()
) -> CohortTable:
    """The cohort table read from ``out_dir/<id>/metrics.json`` of each study in ``ids``."""
    rows: list[dict] = []
    for study_id in ids:
        path = Path(out_dir) / study_id / "metrics.json"
        try:
            metrics = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot be read: {exc}", path=path) from None
        rows += cohort_rows(study_id, metrics)
    columns = list(FIRST_COLUMNS)
    for row in rows:
        columns += [c for c in row if c not in columns]
    return CohortTable(columns=columns, rows=rows, outcomes=list(outcomes))


def _csv_text(columns: Sequence[str], rows: Iterable[Mapping]) -> str:
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buffer.getvalue()


def _arrow_column(values: list):
    """(values, pyarrow type name) for one column: numbers, booleans or text."""
    present = [v for v in values if v is not None and v != ""]
    if present and all(isinstance(v, bool) for v in present):
        return [v if isinstance(v, bool) else None for v in values], "bool_"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        is_int = all(isinstance(v, int) for v in present)
        cast = int if is_int else float
        return [cast(v) if isinstance(v, int | float) else None for v in values], (
            "int64" if is_int else "float64"
        )
    return [None if v is None else str(v) for v in values], "string"


def write_cohort(table: CohortTable, out_dir: str | os.PathLike) -> list[Path]:
    """Write ``cohort.csv``, ``errors.csv`` (header only when nothing failed) and, when
    pyarrow is installed, ``cohort.parquet`` into ``out_dir``, each atomically."""
    out = Path(out_dir)
    written = [
        write_text(out / COHORT_CSV, _csv_text(table.columns, table.rows)),
        write_text(out / ERRORS_CSV, _csv_text(ERROR_COLUMNS, map(asdict, table.errors))),
    ]
    if importlib.util.find_spec("pyarrow") is None:
        # Optional (not a dependency): no parquet, and none left from a run that had it.
        with contextlib.suppress(FileNotFoundError):
            (out / COHORT_PARQUET).unlink()
        return written
    pa = importlib.import_module("pyarrow")
    pq = importlib.import_module("pyarrow.parquet")
    arrays, fields = [], []
    for column in table.columns:
        values, kind = _arrow_column([row.get(column) for row in table.rows])
        arrays.append(pa.array(values, type=getattr(pa, kind)()))
        fields.append(column)
    with atomic_path(out / COHORT_PARQUET) as tmp:
        pq.write_table(pa.Table.from_arrays(arrays, names=fields), str(tmp))
    written.append(out / COHORT_PARQUET)
    return written
