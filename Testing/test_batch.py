"""``mescc batch``: a cohort of phantom studies on a real Dask cluster, and the pieces below it.

The end-to-end test starts its own scheduler and two workers as separate processes on
loopback (``dask scheduler``, ``dask worker``), runs a manifest of three phantom studies, one
broken row and one row asking for DWI, kills one worker while it analyses a study, and
checks that every good study is complete and equal to ``mescc analyze`` on it, that the
failures are in ``errors.csv`` with their messages, that nothing is half-written, and that a
second run does no work. The rest drives the manifest checks, the content hash, the retry of
lost workers (a stand-in client) and the cohort table on synthetic files.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib import batch
from MESCCAnalyzerLib.cli import batch_cmd, main
from MESCCAnalyzerLib.outputs import MARKER, write_image
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels

ROOT = Path(__file__).resolve().parents[1]
DASK = Path(sys.executable).parent / "dask"
GOOD = {"P1": ("2", 0), "P2": ("1b", 1), "P3": ("3", 2)}
HEADER = "id,mri,seeds,t1,ct,pet,dwi,level_anchor\n"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def files_below(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*")}


# ---------------------------------------------------------------------------------------
# Fixtures: phantom studies and a manifest, a Dask cluster of separate processes
# ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def a_cohort(tmp_path_factory, phantom_dir):
    """A manifest of 3 phantom studies (seeds placed from their truth, paths relative to the
    manifest), a row whose MRI is not an image, and a row whose DWI is a 3D image."""
    root = tmp_path_factory.mktemp("cohort")
    rows = []
    for study_id, (grade, seed) in GOOD.items():
        study = phantom_dir(grade, seed)
        labels = sitk.ReadImage(str(study / "labels.nii.gz"))
        write_image(strokes_from_labels(labels, rng_seed=seed), root / f"{study_id}_seeds.nii.gz")
        rows.append(
            f"{study_id},{study / 't2.nii.gz'},{study_id}_seeds.nii.gz,{study / 't1.nii.gz'},"
            f"{study / 'ct.nii.gz'},{study / 'pet_dicom'},,\n"
        )
    (root / "broken.nii.gz").write_bytes(b"this is not an image")
    rows.append("BROKEN,broken.nii.gz,P1_seeds.nii.gz,,,,,\n")
    t2 = phantom_dir("2", 0) / "t2.nii.gz"
    rows.append(f"WITH_DWI,{t2},P1_seeds.nii.gz,,,,{t2},\n")  # a 3D image as its DWI
    manifest = root / "manifest.csv"
    manifest.write_text(HEADER + "".join(rows), encoding="utf-8")
    return manifest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def a_dask_cluster(tmp_path_factory):
    """``dask scheduler`` and two ``dask worker`` processes (one thread each) on 127.0.0.1,
    in throw-away folders. A worker that dies fails its task at once (allowed-failures 0),
    so the batch's own retry is what brings the study back."""
    from distributed import Client

    folder = tmp_path_factory.mktemp("dask")
    address = f"tcp://127.0.0.1:{free_port()}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "MESCCAnalyzer"),
        "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "0",
    }

    def start(name: str, *argv) -> subprocess.Popen:
        (folder / name).mkdir()
        log = open(folder / f"{name}.log", "wb")  # closed after the process ends
        logs.append(log)
        return subprocess.Popen(
            [DASK, *argv], cwd=folder / name, stdout=log, stderr=subprocess.STDOUT, env=env
        )

    logs, processes = [], []
    try:
        port = address.rsplit(":", 1)[1]
        processes.append(start("scheduler", "scheduler", "--host", "127.0.0.1", "--port", port,
                               "--no-dashboard"))  # fmt: skip
        for n in range(2):
            processes.append(
                start(f"worker{n}", "worker", address, "--host", "127.0.0.1", "--nthreads", "1",
                      "--no-nanny", "--memory-limit", "4GB", "--local-directory", folder / f"worker{n}")
            )  # fmt: skip
        with Client(address, timeout="60s", set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
            pids = client.run(os.getpid)  # worker address -> pid (no nanny: the process)
        by_pid = {p.pid: p for p in processes[1:]}
        yield address, {addr: by_pid[pid] for addr, pid in pids.items()}
    finally:
        for process in reversed(processes):
            stop(process)
        for log in logs:
            log.close()


# ---------------------------------------------------------------------------------------
# End to end
# ---------------------------------------------------------------------------------------
def analyze_alone(row: dict, manifest: Path, out: Path) -> Path:
    """``mescc analyze`` on one manifest row, as a user would run it."""
    base = manifest.parent
    argv = ["-q", "analyze", "--out", str(out), "--no-scene"]
    for column in ("mri", "seeds", "t1", "ct", "pet"):
        argv += [f"--{column}", str(base / row[column])]
    assert main(argv) == 0
    return out


def assert_same_numbers(ours, theirs, where: str, *, abs_tol: float = 1e-9) -> None:
    """Equal structure and text; numbers equal to 1e-6 relative. The batch runs ITK with one
    thread per study, `mescc analyze` with one per core: the registration metric's sums are
    added in another order, which moves the transform in the 10th digit (measured: 1e-10 on
    the metrics, 3e-7 on the metric of a discarded starting position)."""
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), where
        for key in ours:
            assert_same_numbers(ours[key], theirs[key], f"{where}.{key}", abs_tol=abs_tol)
    elif isinstance(ours, list):
        assert len(ours) == len(theirs), where
        for i, (a, b) in enumerate(zip(ours, theirs, strict=True)):
            assert_same_numbers(a, b, f"{where}[{i}]", abs_tol=abs_tol)
    elif isinstance(ours, float):
        assert ours == pytest.approx(theirs, rel=1e-6, abs=abs_tol, nan_ok=True), where
    else:
        assert ours == theirs, where


def number_or_text(row: dict) -> dict:
    def convert(text: str):
        try:
            return float(text)
        except ValueError:
            return text

    return {k: convert(v) for k, v in row.items()}


def assert_same_analysis(ours: Path, theirs: Path, study_id: str) -> None:
    """The same files, segmentation and numbers as `mescc analyze` (plus the batch's stamp)."""
    assert files_below(ours) == files_below(theirs) | {batch.STAMP}
    labels = [sitk.GetArrayFromImage(sitk.ReadImage(str(f / "segmentation.seg.nrrd"))) for f in (ours, theirs)]  # fmt: skip
    assert (labels[0] == labels[1]).all(), study_id
    for name in ("metrics.json", "registration.json"):
        mine, other = (json.loads((f / name).read_text()) for f in (ours, theirs))
        for volatile in ("elapsed_s", "init_candidates", "levels"):  # time; the search's trace
            mine.pop(volatile, None), other.pop(volatile, None)
        assert_same_numbers(mine, other, f"{study_id}/{name}")
    sections = [[number_or_text(r) for r in read_csv(f / "sections.csv")] for f in (ours, theirs)]
    assert_same_numbers(
        sections[0],
        sections[1],
        f"{study_id}/sections.csv",
        abs_tol=1.5e-4,  # written with 4 decimals: a 1e-10 change may flip the last one
    )


def kill_a_worker_while_it_analyses(address: str, workers: dict) -> list[str]:
    """Wait until a worker has run a study for a moment, then SIGKILL it; its study ids."""
    from distributed import Client

    with Client(address, timeout="30s", set_as_default=False) as client:

        def busy():
            for worker, keys in client.processing().items():
                studies = [k for k in keys if str(k).startswith("mescc-P")]
                if studies and worker in workers:
                    return worker, studies
            return None

        worker, keys = wait_for(busy, 120, "a worker analysing a study")
        time.sleep(0.5)  # well inside the analysis (a study takes seconds)
        victim = workers.pop(worker)
        victim.send_signal(signal.SIGKILL)
        victim.wait()
    return [str(k).split("-")[1] for k in keys]


@pytest.mark.slow
def test_a_cohort_survives_a_killed_worker_equals_mescc_analyze_and_resumes_without_work(
    a_cohort, a_dask_cluster, tmp_path, capsys
):
    address, workers = a_dask_cluster
    out = tmp_path / "cohort_out"
    argv = ["-q", "batch", str(a_cohort), "--out", str(out), "--scheduler", address]
    argv.append("--no-scene")
    status = {}
    run = threading.Thread(target=lambda: status.setdefault("rc", main(argv)))
    run.start()
    try:
        killed = kill_a_worker_while_it_analyses(address, workers)
    finally:
        run.join(timeout=600)
    assert status["rc"] == 1  # some studies failed, the others are complete
    assert killed and set(killed) <= set(GOOD)
    printed = capsys.readouterr().out
    assert "5 studies: 3 analysed, 0 already complete, 2 failed" in printed

    # Every good study complete, as `mescc analyze` writes it, plus its stamp.
    cohort = read_csv(out / "cohort.csv")
    assert [r["id"] for r in cohort] == list(GOOD)
    rows = {r["id"]: r for r in read_csv(a_cohort)}
    for study_id in GOOD:
        ours = out / study_id
        theirs = analyze_alone(rows[study_id], a_cohort, tmp_path / f"alone_{study_id}")
        assert_same_analysis(ours, theirs, study_id)
        metrics = json.loads((ours / "metrics.json").read_text())
        row = next(r for r in cohort if r["id"] == study_id)
        assert row["bilsky_grade"] == metrics["bilsky_grade"]
        assert float(row["mscc_percent"]) == pytest.approx(metrics["mscc_percent"], rel=1e-12)
        assert json.loads((ours / batch.STAMP).read_text())["options"]["scene"] is False

    # The failures, each with its one-line message.
    errors = {r["id"]: r for r in read_csv(out / "errors.csv")}
    assert set(errors) == {"BROKEN", "WITH_DWI"}
    assert "broken.nii.gz: not an image file SimpleITK can read" in errors["BROKEN"]["message"]
    assert errors["BROKEN"]["line"] == "5"
    assert "a 3D image" in errors["WITH_DWI"]["message"]
    assert not (out / "BROKEN").exists() and not (out / "WITH_DWI").exists()

    # Nothing half-written: no temporary left by the killed worker, every folder marked.
    leftovers = [p for p in out.rglob("*") if ".part" in p.name or p.name.endswith(".old")]
    assert leftovers == []
    assert all((out / s / MARKER).is_file() for s in (".", *GOOD))

    # The same command again: nothing to analyse (one worker left, none needed).
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.parent.name in GOOD}
    assert main(argv) == 1
    printed = capsys.readouterr().out
    assert "5 studies: 0 analysed, 3 already complete, 2 failed" in printed
    assert "(2 as in the earlier run, same inputs)" in printed  # BROKEN and WITH_DWI
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert read_csv(out / "cohort.csv") == cohort


# ---------------------------------------------------------------------------------------
# Bad manifests and an unreachable scheduler: one line, exit 2, nothing written
# ---------------------------------------------------------------------------------------
def a_manifest(folder: Path, text: str) -> Path:
    (folder / "t2.nii.gz").write_bytes(b"x")
    (folder / "seeds.nii.gz").write_bytes(b"x")
    path = folder / "manifest.csv"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,mri\nA,t2.nii.gz\n", "missing column seeds"),
        (HEADER + "A,t2.nii.gz,nowhere.nii.gz,,,,,\n", "line 2 (A): seeds: no such file"),
        (
            HEADER + "A,t2.nii.gz,seeds.nii.gz,,,,,\na,t2.nii.gz,seeds.nii.gz,,,,,\n",
            "line 3 (a): duplicate id 'a' (first on line 2)",
        ),
        ("id,mri,seeds,suv\nA,t2.nii.gz,seeds.nii.gz,x\n", "unknown column suv"),
        ("id,mri,seeds\n../up,t2.nii.gz,seeds.nii.gz\n", "the id '../up' cannot name a folder"),
        (HEADER, "the manifest has no study"),
    ],
    ids=["missing-column", "missing-file", "duplicate-id", "unknown-column", "bad-id", "empty"],
)
def test_a_bad_manifest_is_refused_in_one_line_with_nothing_written(
    tmp_path, capsys, text, message
):
    manifest = a_manifest(tmp_path, text)
    out = tmp_path / "out"
    assert main(["batch", str(manifest), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mescc batch: error: ")
    assert message in err[0] and str(manifest) in err[0]
    assert not out.exists()


def test_an_unreachable_scheduler_is_refused_in_one_line_with_nothing_written(
    tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(batch_cmd, "CONNECT_TIMEOUT_S", 2.0)
    manifest = a_manifest(tmp_path, HEADER + "A,t2.nii.gz,seeds.nii.gz,,,,,\n")
    out = tmp_path / "out"
    address = f"tcp://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["batch", str(manifest), "--out", str(out), "--scheduler", address]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{address}: cannot reach the Dask scheduler" in err[0]
    assert not out.exists()


def test_the_manifest_takes_paths_from_its_own_folder(tmp_path):
    (tmp_path / "data" / "pet").mkdir(parents=True)
    for name in ("t2.nii.gz", "seeds.nii.gz"):
        (tmp_path / "data" / name).write_bytes(b"x")
    manifest = tmp_path / "manifest.csv"
    text = "\ufeffID , MRI,Seeds,pet\nA,data/t2.nii.gz,data/seeds.nii.gz,data/pet\n,,,\n"
    manifest.write_text(text, encoding="utf-8")  # Excel's BOM, spaces, capitals, a blank row
    (study,) = batch.read_manifest(manifest)
    assert study.id == "A" and study.line == 2
    assert study.mri == tmp_path / "data" / "t2.nii.gz"
    assert study.pet == tmp_path / "data" / "pet" and study.ct is None


# ---------------------------------------------------------------------------------------
# Content hash
# ---------------------------------------------------------------------------------------
def test_the_inputs_hash_follows_the_contents_not_the_names_or_places(tmp_path):
    for place in ("a", "b"):
        (tmp_path / place / "pet").mkdir(parents=True)
        (tmp_path / place / "t2.nii.gz").write_bytes(b"mri")
        (tmp_path / place / "s.nii.gz").write_bytes(b"seeds")
        for n in range(3):
            (tmp_path / place / "pet" / f"{n}.dcm").write_bytes(bytes([n]) * 10)

    def study(place: str) -> batch.Study:
        folder = tmp_path / place
        return batch.Study("A", folder / "t2.nii.gz", folder / "s.nii.gz", pet=folder / "pet")

    options = batch.BatchOptions(scene=False)
    first = batch.inputs_hash(study("a"), options)
    assert batch.inputs_hash(study("b"), options) == first  # a copy elsewhere: same
    assert batch.inputs_hash(study("a"), batch.BatchOptions(scene=True)) != first
    (tmp_path / "b" / "pet" / "2.dcm").write_bytes(b"\2" * 9 + b"\3")  # one byte of a slice
    assert batch.inputs_hash(study("b"), options) != first
    (tmp_path / "b" / "pet" / "2.dcm").rename(tmp_path / "b" / "pet" / "9.dcm")
    (tmp_path / "b" / "pet" / "9.dcm").write_bytes(b"\2" * 10)  # same bytes, another name
    assert batch.inputs_hash(study("b"), options) != first


# ---------------------------------------------------------------------------------------
# Retries of lost workers, with a stand-in client
# ---------------------------------------------------------------------------------------
class LostWorker(Exception):
    """What a future raises when its worker died (dask: KilledWorker)."""


class InstantFuture:
    def __init__(self, key, outcome=None, error=None):
        self.key, self._outcome, self._error = key, outcome, error

    def add_done_callback(self, fn):
        fn(self)

    def result(self):
        if self._error is not None:
            raise self._error
        return self._outcome

    def cancel(self):
        pass


class FlakyClient:
    """Loses the worker of each study's first ``losses`` submissions, then 'analyses' it by
    writing a stamped folder with a small metrics.json."""

    def __init__(self, losses: int):
        self.losses, self.submitted = losses, []

    def submit(self, fn, study, out_dir, stamp, options, scene_writer, *, key, pure):
        assert fn is batch.analyze_study and pure is False
        self.submitted.append(study.id)
        if self.submitted.count(study.id) <= self.losses:
            return InstantFuture(key, error=LostWorker("worker tcp://x died"))
        folder = Path(out_dir) / study.id
        folder.mkdir(parents=True)
        (folder / "metrics.json").write_text(json.dumps({"bilsky_grade": "1b", "x_mm": 2.5}))
        (folder / batch.STAMP).write_text(json.dumps(stamp))
        return InstantFuture(key, batch.StudyOutcome(study.id, "done"))


@pytest.fixture
def two_small_studies(tmp_path):
    studies = []
    for study_id in ("A", "B"):
        for name in ("t2", "s"):
            (tmp_path / f"{study_id}{name}").write_text(f"{study_id}{name}")
        studies.append(batch.Study(study_id, tmp_path / f"{study_id}t2", tmp_path / f"{study_id}s"))
    return studies


def test_a_study_whose_worker_died_is_submitted_again_up_to_the_retries(
    two_small_studies, tmp_path
):
    client = FlakyClient(losses=2)
    table = batch.run_batch(two_small_studies, client, tmp_path / "out", retries=2)
    assert client.submitted.count("A") == 3 and [o.attempts for o in table.outcomes] == [3, 3]
    assert [r["x_mm"] for r in table.rows] == [2.5, 2.5] and not table.errors
    # Complete now: the same studies again need no client at all.
    again = batch.run_batch(two_small_studies, None, tmp_path / "out", retries=2)
    assert [o.status for o in again.outcomes] == ["skipped", "skipped"]


def test_a_study_lost_more_often_than_the_retries_fails_with_the_reason(
    two_small_studies, tmp_path
):
    table = batch.run_batch(two_small_studies, FlakyClient(losses=3), tmp_path / "out", retries=1)
    assert [o.status for o in table.outcomes] == ["failed", "failed"] and table.rows == []
    (error, _) = read_csv(tmp_path / "out" / "errors.csv")
    assert (
        error["message"]
        == "its worker was lost 2 times, last: internal error: LostWorker: worker tcp://x died"
    )
    assert error["inputs_sha256"] == ""  # not the inputs' fault: a re-run tries again
    retried = batch.run_batch(two_small_studies, FlakyClient(losses=0), tmp_path / "out")
    assert [o.status for o in retried.outcomes] == ["done", "done"]


# ---------------------------------------------------------------------------------------
# The cohort table
# ---------------------------------------------------------------------------------------
def test_the_cohort_has_one_row_per_lesion_and_one_per_study_without_lesions(tmp_path):
    (tmp_path / "S1").mkdir()
    (tmp_path / "S2").mkdir()
    study_metrics = {
        "bilsky_grade": "2",
        "levels": [{"level": "T7", "cord_csa_mm2": 40.0}, {"level": "T8"}],  # a per-level table
        "mass_levels": ["T8"],
        "mass_volume_ml": 5.5,
        "worst_section_lps_mm": [1.0, 2.0, 3.0],
        "mass_circumferential_sectors": ["anterior", "left"],
        "bilsky_facts": {"mass_touches_cord": True},
    }
    lesions = {
        "bilsky_grade": "3",
        "suv_max": 7.0,
        "lesions": [
            {"id": "L1", "levels": ["T7", "T8"], "bilsky_grade": "3", "mass_volume_ml": 4.0},
            {"id": "L2", "levels": "L2", "bilsky_grade": "1a", "mass_volume_ml": 1.0},
        ],
    }
    (tmp_path / "S1" / "metrics.json").write_text(json.dumps(study_metrics))
    (tmp_path / "S2" / "metrics.json").write_text(json.dumps(lesions))
    table = batch.cohort_table(tmp_path, ["S1", "S2"])
    assert table.columns[:4] == ["id", "lesion", "levels", "bilsky_grade"]
    assert [(r["id"], r["lesion"], r["levels"], r["bilsky_grade"]) for r in table.rows] == [
        ("S1", "", "T8", "2"),
        ("S2", "L1", "T7; T8", "3"),
        ("S2", "L2", "L2", "1a"),
    ]
    assert [r.get("mass_volume_ml") for r in table.rows] == [5.5, 4.0, 1.0]
    assert [r.get("suv_max") for r in table.rows] == [None, 7.0, 7.0]  # the study's, per lesion
    first = table.rows[0]
    assert (first["worst_section_lps_mm.2"], first["bilsky_facts.mass_touches_cord"]) == (3.0, True)
    assert first["mass_circumferential_sectors"] == "anterior; left"
    assert not [c for c in table.columns if c.startswith("levels.")]  # the table stays out

    batch.write_cohort(table, tmp_path)
    written = read_csv(tmp_path / "cohort.csv")
    assert [r["lesion"] for r in written] == ["", "L1", "L2"] and written[0]["suv_max"] == ""
    assert read_csv(tmp_path / "errors.csv") == []
    has_arrow = importlib.util.find_spec("pyarrow") is not None  # optional
    assert (tmp_path / "cohort.parquet").exists() == has_arrow
