"""Outputs never cost a user's data: folders replaced only when mescc wrote them, bad output
paths refused before the work, no leftovers of killed runs, owner-only files, one-line errors.

Issue 18, items 1, 5 (output paths), 9 (full disk, file names, terminal encoding), 10 and 11
(permissions).
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import resource
import signal
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib import outputs, pipeline
from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.outputs import MARKER, OutputError, atomic_dir, check_output_dir

MESCC = [sys.executable, "-m", "MESCCAnalyzerLib.cli"]


def run_mescc(*args, env=None, preexec_fn=None, cwd=None, timeout=120):
    # No .pyc is written by the children: a file-size limit would leave truncated ones.
    environment = dict(os.environ, **(env or {}))
    environment["PYTHONPATH"] = str(Path(__file__).resolve().parents[1] / "MESCCAnalyzer")
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(
        [*MESCC, *map(str, args)],
        capture_output=True,
        text=True,
        env=environment,
        preexec_fn=preexec_fn,
        cwd=cwd,
        timeout=timeout,
    )


def hidden_entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


@pytest.fixture
def a_users_folder(tmp_path):
    """A folder of the user's: a thesis inside and a sibling `.d.old` of their own."""
    folder = tmp_path / "d"
    folder.mkdir()
    (folder / "thesis.txt").write_text("years of work")
    (tmp_path / ".d.old").mkdir()
    (tmp_path / ".d.old" / "backup.txt").write_text("older work")
    return folder


@pytest.fixture(scope="module")
def a_study(tmp_path_factory):
    """A phantom study with seed strokes, on disk."""
    from MESCCAnalyzerLib.phantom import write_phantom
    from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels

    root = tmp_path_factory.mktemp("study")
    study = write_phantom(root / "study", "2", 0)
    labels = sitk.ReadImage(str(study / "labels.nii.gz"))
    sitk.WriteImage(strokes_from_labels(labels, rng_seed=0), str(root / "seeds.nii.gz"))
    return study, root / "seeds.nii.gz"


# --- 1. data loss --------------------------------------------------------------------------
def test_analyze_refuses_a_users_folder_and_deletes_nothing(a_users_folder, a_study, capsys):
    study, seeds = a_study
    code = main(
        ["analyze", "--mri", str(study / "t2.nii.gz"), "--seeds", str(seeds), "--no-scene",
         "--out", str(a_users_folder)]
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and str(a_users_folder) in err and "not written by mescc" in err
    assert (a_users_folder / "thesis.txt").read_text(encoding="utf-8") == "years of work"
    assert (a_users_folder.parent / ".d.old" / "backup.txt").read_text(
        encoding="utf-8"
    ) == "older work"


@pytest.mark.parametrize("command", ["phantom", "demo", "metrics", "serve"])
def test_every_folder_writer_refuses_a_users_folder(command, a_users_folder, a_study, capsys):
    study, _ = a_study
    args = {
        "phantom": ["phantom", "--grade", "1a"],
        "demo": ["demo", "--no-scene"],
        "metrics": ["metrics", "--labels", str(study / "labels.nii.gz")],
        "serve": ["serve", "--demo", "--port", "0"],
    }[command]
    assert main([*args, "--out", str(a_users_folder)]) == 2
    assert "not written by mescc" in capsys.readouterr().err
    assert sorted(p.name for p in a_users_folder.iterdir()) == ["thesis.txt"]
    assert (a_users_folder.parent / ".d.old" / "backup.txt").is_file()


def test_a_home_folder_is_refused(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    (home / "Documents").mkdir(parents=True)
    (home / ".bashrc").write_text("export X=1")
    monkeypatch.setenv("HOME", str(home))
    assert main(["phantom", "--grade", "1a", "--out", os.path.expanduser("~")]) == 2
    assert "not written by mescc" in capsys.readouterr().err
    assert (home / ".bashrc").is_file() and (home / "Documents").is_dir()


def test_a_folder_mescc_wrote_is_replaced_as_a_whole(tmp_path):
    target = tmp_path / "out"
    with atomic_dir(target) as tmp:
        (tmp / "first.txt").write_text("1")
    assert (target / MARKER).is_file()
    with atomic_dir(target) as tmp:
        (tmp / "second.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == sorted([MARKER, "second.txt"])
    assert hidden_entries(tmp_path) == []
    (tmp_path / "empty").mkdir()
    with atomic_dir(tmp_path / "empty") as tmp:  # an empty folder holds nothing to lose
        (tmp / "a.txt").write_text("a")
    assert (tmp_path / "empty" / "a.txt").is_file()


def test_a_symbolic_link_is_never_followed_as_an_output_folder(tmp_path):
    real = tmp_path / "real"
    with atomic_dir(real) as tmp:
        (tmp / "a.txt").write_text("a")
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(OutputError, match="symbolic link|not a folder"):
        check_output_dir(tmp_path / "link")
    with pytest.raises(OutputError):
        with atomic_dir(tmp_path / "link"):
            pass
    assert (real / "a.txt").is_file()


# --- 5. bad output paths, refused before the work -----------------------------------------
@contextlib.contextmanager
def a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: a read-only bind mount
        subprocess.run(["mount", "--bind", "-o", "ro", folder, folder], check=True)
        try:
            yield folder
        finally:
            subprocess.run(["umount", folder], check=True)
    else:
        folder.chmod(0o500)
        try:
            yield folder
        finally:
            folder.chmod(0o700)


@pytest.mark.parametrize(
    "where",
    ["/dev/full/x", "below-a-file", "/proc/self/x", ".", "..", "read-only", ""],
)
def test_bad_output_paths_are_refused_before_the_analysis_runs(
    where, a_study, tmp_path, capsys, monkeypatch
):
    study, seeds = a_study
    (tmp_path / "file.txt").write_text("x")
    monkeypatch.chdir(tmp_path)

    def must_not_run(*args, **kwargs):
        raise AssertionError("the analysis ran before the output was checked")

    monkeypatch.setattr(pipeline, "run_analysis", must_not_run)
    with contextlib.ExitStack() as stack:
        if where == "read-only":
            out = str(stack.enter_context(a_read_only_folder(tmp_path)) / "out")
        elif where == "below-a-file":
            out = str(tmp_path / "file.txt" / "out")
        else:
            out = where
        code = main(
            ["analyze", "--mri", str(study / "t2.nii.gz"), "--seeds", str(seeds), "--no-scene",
             "--out", out]
        )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err
    expected = ["file.txt", "ro"] if where == "read-only" else ["file.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == expected


@pytest.mark.parametrize(
    "args",
    [
        ["segment", "--image", "{t2}", "--seeds", "{seeds}", "--out", "/proc/self/x.nii.gz"],
        ["suv", "{pet}", "--out", "{file}/suv.nii.gz"],
        ["register", "--fixed", "{t2}", "--moving", "{ct}", "--out", "/dev/full/t.tfm"],
        ["metrics", "--labels", "{labels}", "--out", "{file}/m"],
    ],
    ids=["segment", "suv", "register", "metrics"],
)
def test_every_command_checks_its_output_path_first(args, a_study, tmp_path, capsys):
    study, seeds = a_study
    (tmp_path / "file.txt").write_text("x")
    names = {
        "t2": study / "t2.nii.gz",
        "ct": study / "ct.nii.gz",
        "pet": study / "pet_dicom",
        "labels": study / "labels.nii.gz",
        "seeds": seeds,
        "file": tmp_path / "file.txt",
    }
    assert main(["-q", *(a.format(**names) for a in args)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot be written" in err


# --- 9. messages ---------------------------------------------------------------------------
def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path):
    name = tmp_path / "bad\nname.nii.gz"
    result = run_mescc("info", name)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "bad\\nname" in result.stderr


def test_an_ascii_terminal_gets_an_escaped_unicode_name_not_a_traceback(tmp_path):
    result = run_mescc("info", tmp_path / "Müller_T2.nii.gz", env={"PYTHONIOENCODING": "ascii"})
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and "M\\xfcller" in result.stderr


def _file_size_limit(limit_bytes):
    def apply():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))

    return apply


def test_a_write_that_fails_gives_one_line_naming_the_output_and_leaves_nothing(a_study, tmp_path):
    study, _ = a_study
    out = tmp_path / "metrics"
    result = run_mescc(
        "-q", "metrics", "--labels", study / "labels.nii.gz", "--out", out,
        preexec_fn=_file_size_limit(20_000),
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no VTK/ITK messages
    assert str(out) in lines[0] and ".part" not in lines[0]
    assert not out.exists() and hidden_entries(tmp_path) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root")
def test_a_full_disk_during_the_analysis_is_one_line_and_leaves_nothing(a_study, tmp_path):
    study, seeds = a_study
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", disk], check=True)
    try:
        result = run_mescc(
            "-q", "analyze", "--mri", study / "t2.nii.gz", "--seeds", seeds, "--no-scene",
            "--out", disk / "analysis",
        )  # fmt: skip
        left = sorted(p.name for p in disk.iterdir())
    finally:
        subprocess.run(["umount", disk], check=True)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert "no space left" in result.stderr and str(disk / "analysis") in result.stderr
    assert left == []


# --- 10. leftovers and races -----------------------------------------------------------------
def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_leftovers_of_a_killed_writer_are_removed_by_the_next_run(tmp_path):
    tag = f"{a_dead_pid()}@{outputs._owner_tag().split('@', 1)[1]}"
    final = tmp_path / "out"
    (tmp_path / f".out.{tag}.abcd1234.part").mkdir()
    (tmp_path / f".out.{tag}.abcd1234.part" / "half.nii.gz").write_bytes(b"\0" * 10)
    (tmp_path / f".report.html.{tag}.x1.part.html").write_text("half")
    (tmp_path / ".out.old").mkdir()  # a user's own folder with a similar name stays
    with atomic_dir(final) as tmp:
        (tmp / "a.txt").write_text("a")
    outputs.write_text(tmp_path / "report.html", "whole")
    assert hidden_entries(tmp_path) == [".out.old"]


def test_a_result_set_aside_by_a_killed_writer_is_put_back(tmp_path):
    final = tmp_path / "out"
    with atomic_dir(final) as tmp:
        (tmp / "result.txt").write_text("previous")
    tag = f"{a_dead_pid()}@{outputs._owner_tag().split('@', 1)[1]}"
    os.rename(final, tmp_path / f".out.{tag}.ffff.old")  # killed between its two renames
    outputs.clean_leftovers(final)
    assert (final / "result.txt").read_text(encoding="utf-8") == "previous"
    assert hidden_entries(tmp_path) == []


def test_killing_the_phantom_writer_leaves_nothing_a_later_run_sees(tmp_path):
    for delay in (0.5, 1.5, 2.5, 3.5):
        child = subprocess.Popen(
            [*MESCC, "-q", "phantom", "--out", tmp_path / "p", "--grade", "2"],
            env=dict(
                os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[1] / "MESCCAnalyzer")
            ),
        )
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.wait(timeout=delay)
        child.send_signal(signal.SIGKILL)
        child.wait()
        outputs.clean_leftovers(tmp_path / "p")
        assert hidden_entries(tmp_path) == [], delay
        assert not (tmp_path / "p").exists() or (tmp_path / "p" / "truth.json").is_file()


def _replace_many(folder: str, times: int, queue) -> None:
    errors = 0
    for i in range(times):
        try:
            with atomic_dir(folder) as tmp:
                (tmp / "n.txt").write_text(str(i))
        except Exception:
            errors += 1
    queue.put(errors)


def test_concurrent_writers_replacing_one_folder_never_fail_and_leave_it_whole(tmp_path):
    # Four writers, 300 replacements each: a check racing another writer's swap (a folder
    # seen, then gone) failed about once in 1000 replacements before every check took one lstat.
    folder = str(tmp_path / "shared")
    queue = multiprocessing.get_context("fork").Queue()
    workers = [
        multiprocessing.get_context("fork").Process(target=_replace_many, args=(folder, 300, queue))
        for _ in range(4)
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=120)
    assert [queue.get(timeout=5) for _ in workers] == [0, 0, 0, 0]
    assert sorted(p.name for p in Path(folder).iterdir()) == sorted([MARKER, "n.txt"])
    assert hidden_entries(tmp_path) == []


# --- 11. privacy -------------------------------------------------------------------------------
def test_outputs_are_readable_by_their_owner_only(tmp_path):
    with atomic_dir(tmp_path / "out") as tmp:
        (tmp / "sub").mkdir()
        (tmp / "sub" / "report.html").write_text("Patient: DOE^JANE")
        sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkUInt8), str(tmp / "seg.nii.gz"))
    outputs.write_json(tmp_path / "single.json", {"PatientID": "123"})
    modes = {
        p.relative_to(tmp_path).as_posix(): stat.S_IMODE(p.stat().st_mode)
        for p in [tmp_path / "single.json", *(tmp_path / "out").rglob("*"), tmp_path / "out"]
    }
    for name, mode in modes.items():
        assert mode & 0o077 == 0, (name, oct(mode))
    assert np.all([m & 0o600 == 0o600 for m in modes.values()])
