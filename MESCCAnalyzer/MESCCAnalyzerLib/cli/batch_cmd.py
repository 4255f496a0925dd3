"""``mescc batch``: a cohort of studies from a CSV manifest, in parallel on a Dask cluster."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import urllib.request
from pathlib import Path

from ..errors import InputError
from ..outputs import check_output_dir, claim_dir, guard_outputs

HELP = "analyse a cohort from a CSV manifest in parallel (Dask): DIR/<id>/, cohort.csv, errors.csv"
DESCRIPTION = (
    "Analyses every study of MANIFEST (a CSV file: id, mri, seeds and optionally t1, ct, pet, "
    "dwi, level_anchor; paths relative to the manifest) as `mescc analyze` would, each into "
    "DIR/<id>/ (atomically), on a Dask cluster: by default worker processes on this machine, "
    "or an existing cluster with --scheduler (its workers must read the same paths). Writes "
    "DIR/cohort.csv (one row per lesion, or per study), DIR/errors.csv (the studies that "
    "failed, one line each) and DIR/cohort.parquet when pyarrow is installed. A failed study "
    "never stops the others; running the same command again skips the studies already "
    "complete (same inputs' contents, same options). Exit status: 0 every study complete, "
    "1 some failed (see errors.csv), 2 a bad manifest or an unreachable scheduler (nothing "
    "written)."
)
CONNECT_TIMEOUT_S = 10.0


def add_arguments(parser):
    parser.add_argument("manifest", metavar="MANIFEST", help="CSV manifest, one row per study")
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="output folder (one folder per study)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="worker processes on this machine, one thread each (default: the number of cores)",
    )
    parser.add_argument(
        "--memory-limit",
        default="auto",
        metavar="SIZE",
        help="memory limit of each local worker, e.g. 4GB (default auto: the memory divided "
        "among the workers); a worker above it is restarted and its study retried",
    )
    parser.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on an existing Dask cluster, e.g. tcp://host:8786, instead of local workers",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=3,
        metavar="K",
        help="times a study is submitted again when its worker dies (default 3)",
    )
    parser.add_argument(
        "--smoothing", type=float, default=0.0, metavar="MM", help="smooth the segmentation (mm)"
    )
    parser.add_argument(
        "--deformable",
        action="store_true",
        help="add a B-spline refinement after the rigid registration",
    )
    parser.add_argument(
        "--no-scene", action="store_true", help="skip scene.mrb (no slicer-core needed)"
    )


def _check_numbers(args) -> None:
    if args.workers is not None and args.workers < 1:
        raise InputError(f"--workers must be at least 1, got {args.workers}")
    if args.retries < 0:
        raise InputError(f"--retries must be 0 or more, got {args.retries}")
    if args.smoothing < 0:
        raise InputError(f"--smoothing must be >= 0 mm, got {args.smoothing}")
    if not args.scheduler:
        _check_memory_limit(args.memory_limit)
    if args.scheduler and args.workers is not None:
        raise InputError(
            "--workers starts local workers; with --scheduler the cluster's workers are used",
            hint="start workers on the cluster with `dask worker ADDRESS`",
        )


def _check_memory_limit(text: str) -> None:
    from distributed.worker_memory import parse_memory_limit

    try:
        parse_memory_limit(text, 1, logger=logging.getLogger(__name__))
    except (ValueError, TypeError) as exc:
        raise InputError(
            f"--memory-limit {text!r} is not a size: {exc}", hint="e.g. 4GB, 0.5 or auto"
        ) from None


def connect(address: str, timeout_s: float = CONNECT_TIMEOUT_S):
    """A client of the Dask scheduler at ``address``; one-line :class:`InputError` if it
    cannot be reached in ``timeout_s``."""
    from distributed import Client

    try:
        return Client(address, timeout=f"{timeout_s}s", set_as_default=False)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise InputError(
            f"cannot reach the Dask scheduler: {reason}",
            path=address,
            hint="is `dask scheduler` running there? check the address, e.g. tcp://HOST:8786",
        ) from None


def start_local_cluster(workers: int, memory_limit: str):
    """Worker processes on this machine (one thread each), scheduler on loopback.

    A worker that dies fails its study at once (``allowed-failures`` 0): ``--retries`` alone
    says how often the study is submitted again.
    """
    import dask
    from distributed import Client, LocalCluster  # first: it registers its configuration

    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            memory_limit=memory_limit,
            dashboard_address=":0",  # a free port (the page needs bokeh)
            silence_logs=logging.ERROR,  # a lost worker is reported by the batch itself
        )
    return cluster, Client(cluster, set_as_default=False)


def describe_cluster(client) -> str:
    """``N workers (T threads), memory limit M each`` of the connected cluster."""
    from dask.utils import format_bytes

    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    threads = sum(w.get("nthreads", 0) for w in workers)
    limits = sorted({w.get("memory_limit") or 0 for w in workers})
    memory = (
        "no memory limit"
        if limits in ([], [0])
        else "memory limit " + "/".join(format_bytes(m) for m in limits) + " per worker"
    )
    return f"{len(workers)} workers ({threads} threads), {memory}"


def dashboard_line(client) -> str | None:
    """Where the cluster's dashboard page is, when it serves one (it needs bokeh)."""
    try:
        link = client.dashboard_link
        with urllib.request.urlopen(link, timeout=2) as answer:
            page = answer.read(4096)
            ok = answer.status == 200
    except Exception:  # no dashboard service, or unreachable from here
        return None
    if b"needs bokeh" in page:  # the scheduler answers, but has no page without bokeh
        return "Dask dashboard: not available (pip install bokeh on the scheduler's machine)"
    return f"Dask dashboard: {link}" if ok else None


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def run(args, term) -> int:
    from .. import batch
    from .analyze_cmd import scene_writer_or_none

    _check_numbers(args)
    manifest = Path(args.manifest)
    studies = batch.read_manifest(manifest)
    out = check_output_dir(args.out)
    guard_outputs([out], [manifest, *(p for s in studies for p in s.inputs().values())])
    options = batch.BatchOptions(
        smoothing_mm=args.smoothing, deformable=args.deformable, scene=not args.no_scene
    )
    scene_writer = scene_writer_or_none(args.no_scene)

    client = cluster = None
    try:
        if args.scheduler:  # checked before anything is written
            client = connect(args.scheduler)
        term.stage("inputs")
        plan = batch.plan_batch(studies, out, options)
        todo = batch.pending(plan)
        claim_dir(out)
        if todo and client is None:
            workers = args.workers or min(_cores() or 1, len(todo))
            term.stage("cluster")
            cluster, client = start_local_cluster(workers, args.memory_limit)
        term.finish()
        if client is not None and not term.quiet:
            print(f"Dask cluster: {describe_cluster(client)}", file=sys.stderr)
            line = dashboard_line(client)
            if line:
                print(line, file=sys.stderr)
        term.stage("studies")
        log = None if term.quiet or term.stream.isatty() else _log_line
        table = batch.run_batch(
            studies,
            client,
            out,
            options=options,
            scene_writer=scene_writer,
            retries=args.retries,
            plan=plan,
            progress=None if term.quiet else term.progress,
            on_study=log,
        )
        term.finish()
    finally:
        for closable in (client, cluster):
            if closable is not None:
                with contextlib.suppress(Exception):
                    closable.close()
    print_summary(table, out)
    return 1 if table.errors else 0


def _log_line(outcome) -> None:
    """One line per finished study when stderr is a log file, not a terminal."""
    what = {"done": f"done in {outcome.elapsed_s:.1f} s", "skipped": "already complete"}
    text = what.get(outcome.status, f"failed: {outcome.message}")
    if outcome.earlier:
        text += " (as in the earlier run: same inputs, not analysed again)"
    print(f"{outcome.id}: {text}", file=sys.stderr, flush=True)


def print_summary(table, out: Path) -> None:
    done, skipped, failed = (table.count(s) for s in ("done", "skipped", "failed"))
    earlier = sum(o.earlier for o in table.errors)
    print(
        f"{len(table.outcomes)} studies: {done} analysed, {skipped} already complete, "
        f"{failed} failed" + (f" ({earlier} as in the earlier run, same inputs)" if earlier else "")
    )
    for outcome in table.errors:
        print(f"  {outcome.id} (manifest line {outcome.line}): {outcome.message}")
    print(f"cohort: {out / 'cohort.csv'} ({len(table.rows)} rows)")
    if failed:
        print(f"errors: {out / 'errors.csv'}")
