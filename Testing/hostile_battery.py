#!/usr/bin/env python3
"""The hostile battery of issue 18: bad inputs, bad output paths, kills, races, a foreign page.

Runs every case against the ``mescc`` of a source tree (by default this checkout) as separate
processes with a time limit, and classifies each outcome:

* ``error``: exit status 2 and exactly one line on stderr, nothing written, inputs unchanged;
* ``result``: exit status 0 and the case's own check of the result holds;
* ``traceback``, ``hang`` (over the time limit), ``wrong`` (anything else: exit 0 where the
  input is bad, an error of several lines, a wrong result), plus, over all cases, the user files
  deleted and the hidden leftovers (``.NAME.*.part``/``.old``) still visible to a later run.

Usage::

    python Testing/hostile_battery.py                       # this checkout
    python Testing/hostile_battery.py --source /tmp/old     # another tree (e.g. git archive)
    python Testing/hostile_battery.py --only 5 --verbose    # the cases of one item

Cases that need root (mounts) are run only as root; the ``mescc serve`` cases start the page
on a free loopback port. Prints one line per case and the counts; exits 1 unless every case is
an ``error`` or a ``result`` with nothing deleted and nothing left over.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk

HERE = Path(__file__).resolve().parent
SHARED = HERE.parent.parent / "shared" / "data"
PET_SLICES = sorted((SHARED / "pet_dicom_flt").glob("*.dcm"))
TIME_LIMIT_S = 90
OUTPUT_FLAGS = ("--out", "--seg-out", "--resampled-dir", "--report", "--info-json")


# ---------------------------------------------------------------------------------------
# Running one case
# ---------------------------------------------------------------------------------------
@dataclass
class Case:
    item: int
    name: str
    args: list  # mescc arguments, or a callable(ws) -> list
    expect: str = "error"  # "error", or "result" with `check`
    check: object = None  # callable(proc, ws) -> str | None (None: fine)
    setup: object = None  # callable(ws) -> None, before the run
    outputs: list = field(default_factory=list)  # must not exist after an error
    env: dict = field(default_factory=dict)
    needs_root: bool = False
    runner: object = None  # callable(ws, mescc) -> Outcome, for cases that are not one command
    must_say: str = ""  # regular expression the error line must match
    must_name: str = ""  # option whose value (a file) the error line must name
    limits: tuple = (TIME_LIMIT_S, 1e9)  # seconds and peak MB an answer may take


@dataclass
class Outcome:
    status: str
    detail: str = ""
    seconds: float = 0.0
    peak_mb: float = 0.0


class Workspace:
    """A throw-away folder with the user's files that no case may delete."""

    def __init__(self, root: Path, base: dict):
        self.root = root
        self.base = base  # shared, read-only study files
        self.user_files = {}
        for rel in ("d/thesis.txt", ".d.old/backup.txt", "home/.bashrc", "notes.txt"):
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"user data: {rel}")
            self.user_files[path] = path.read_bytes()

    def deleted(self) -> list[str]:
        return [
            str(p)
            for p, data in self.user_files.items()
            if not p.is_file() or p.read_bytes() != data
        ]

    def leftovers(self) -> list[str]:
        found = []
        for folder, dirs, files in os.walk(self.root):
            for name in dirs + files:
                if re.match(r"^\..+\.(part|old)", name) or re.search(r"\.part(\.|$)", name):
                    if name == ".d.old":
                        continue
                    found.append(os.path.join(folder, name))
        return found


def _snapshot(paths) -> dict:
    digest = {}
    for p in paths:
        p = Path(p)
        if p.is_file() and not p.is_symlink():
            digest[p] = hashlib.sha256(p.read_bytes()).hexdigest()
    return digest


def run_command(mescc, args, *, env=None, timeout=TIME_LIMIT_S, preexec_fn=None, cwd=None):
    """Run ``mescc ARGS``; returns (exit, stdout, stderr, seconds, peak MB), exit None on a hang."""
    environment = dict(os.environ, **(env or {}))
    environment.update(mescc["env"])
    t0 = time.perf_counter()
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
    ):
        child = subprocess.Popen(
            [*mescc["cmd"], *map(str, args)],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            env=environment,
            preexec_fn=preexec_fn,
            cwd=cwd,
            start_new_session=True,
        )
        deadline = t0 + timeout
        code = None
        peak = 0.0
        while time.perf_counter() < deadline:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                code = os.waitstatus_to_exitcode(status)
                peak = usage.ru_maxrss / 1024.0
                break
            time.sleep(0.05)
        if code is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        child.returncode = code if code is not None else -9
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    return code, stdout, stderr, time.perf_counter() - t0, peak


def run_case(case: Case, ws: Workspace, mescc) -> Outcome:
    if case.runner is not None:
        return case.runner(ws, mescc)
    if case.setup is not None:
        case.setup(ws)
    args = case.args(ws) if callable(case.args) else case.args
    inputs = [
        a
        for i, a in enumerate(args)
        if isinstance(a, Path) and a.exists() and (i == 0 or args[i - 1] not in OUTPUT_FLAGS)
    ]
    files = [p for a in inputs for p in ([a] if a.is_file() else a.rglob("*"))]
    before = _snapshot(files)
    code, stdout, stderr, seconds, peak = run_command(mescc, args, env=case.env)
    outcome = Outcome("wrong", seconds=seconds, peak_mb=peak)
    if _snapshot(files) != before:
        outcome.detail = "an input was modified"
        return outcome
    lines = [line for line in stderr.splitlines() if line.strip()]
    if code is None:
        outcome.status, outcome.detail = "hang", f"no answer in {TIME_LIMIT_S} s"
    elif "Traceback (most recent call last)" in stderr or code not in (0, 1, 2, 130):
        outcome.status = "traceback"
        outcome.detail = (lines[-1] if lines else f"exit {code}")[:160]
    elif case.expect == "error":
        written = [str(p) for p in case.outputs if Path(p).exists()]
        named = str(args[args.index(case.must_name) + 1]) if case.must_name else ""
        says = (
            not case.must_say or re.search(case.must_say, lines[0] if lines else "", re.I)
        ) and (named in (lines[0] if lines else ""))
        within = seconds <= case.limits[0] and peak <= case.limits[1]
        if code == 2 and len(lines) == 1 and not written and says and within:
            outcome.status, outcome.detail = "error", lines[0][:160]
        elif code == 2 and len(lines) == 1 and not written:
            outcome.detail = (
                f"one line, but {'not within the limits' if not within else 'not naming what it should'}: "
                + lines[0][:120]
            )
        elif code == 2 and written:
            outcome.detail = f"wrote {written}"
        else:
            outcome.detail = f"exit {code}: " + (" | ".join(lines)[:160] or stdout[:160])
    else:
        problem = (
            case.check(code, stdout, stderr, ws) if case.check else (None if code == 0 else "")
        )
        if code == 0 and problem is None:
            outcome.status, outcome.detail = "result", stdout.strip().splitlines()[-1][:120]
        else:
            outcome.detail = f"exit {code}: {problem or ''} {' | '.join(lines)[:120]}"
    return outcome


# ---------------------------------------------------------------------------------------
# Hostile inputs
# ---------------------------------------------------------------------------------------
def pet_slice(i: int = 0) -> pydicom.Dataset:
    return pydicom.dcmread(PET_SLICES[i])


def dicom_folder(ws: Workspace, name: str, edit, *, both: bool = True) -> Path:
    """A two-slice series made of the real PET slice 1 (the second 4 mm above it, as a
    scanner writes it), with ``edit(ds, i)`` applied to each slice."""
    folder = ws.root / name
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(2 if both else 1):
        ds = pet_slice(0)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
        ds.InstanceNumber = i + 1
        x, y, z = (float(v) for v in ds.ImagePositionPatient)
        ds.ImagePositionPatient = [x, y, z + 4.0 * i]
        edit(ds, i)
        ds.save_as(folder / f"slice{i + 1}.dcm", enforce_file_format=True)
    return folder


def nifti_header(dims, pixdim, *, datatype=16, vox_offset=352.0, qform=None, sform=None) -> bytes:
    """A NIfTI-1 header written field by field (little endian)."""
    hdr = bytearray(348)
    struct.pack_into("<i", hdr, 0, 348)
    struct.pack_into("<8h", hdr, 40, *dims)
    bitpix = {2: 8, 4: 16, 16: 32, 64: 64}[datatype]
    struct.pack_into("<hh", hdr, 70, datatype, bitpix)
    struct.pack_into("<8f", hdr, 76, *pixdim)
    struct.pack_into("<f", hdr, 108, vox_offset)
    struct.pack_into("<f", hdr, 112, 1.0)  # scl_slope
    if qform is not None:
        code, quat, offset = qform
        struct.pack_into("<h", hdr, 252, code)
        struct.pack_into("<3f", hdr, 256, *quat)
        struct.pack_into("<3f", hdr, 268, *offset)
    if sform is not None:
        code, rows = sform
        struct.pack_into("<h", hdr, 254, code)
        for r, row in enumerate(rows):
            struct.pack_into("<4f", hdr, 280 + 16 * r, *row)
    hdr[344:348] = b"n+1\0"
    return bytes(hdr) + b"\0\0\0\0"


def write_nifti(path: Path, header: bytes, data: bytes = b"", *, gz: bool = True) -> Path:
    payload = header + data
    path.write_bytes(gzip.compress(payload) if gz else payload)
    return path


def cube_nifti(path: Path, *, pixdim=(1.0, 1.0, 1.0), nan=False, qform=None, sform=None, dims=None):
    n = 10
    values = np.arange(n**3, dtype=np.float32).reshape(n, n, n)
    if nan:
        values[4:6, 4:6, 4:6] = np.nan
    dims = dims or (3, n, n, n, 1, 1, 1, 1)
    header = nifti_header(dims, (1.0, *pixdim, 1, 1, 1, 1), qform=qform, sform=sform)
    return write_nifti(path, header, values.tobytes())


def j2k_truncated(ws: Workspace) -> Path:
    """A PET slice whose pixel data is a JPEG 2000 stream cut after its size segment."""

    def edit(ds, i):
        if i == 0:
            codestream = bytearray(b"\xff\x4f\xff\x51\x00\x29\x00\x00")
            codestream += struct.pack(">IIIIIIII", 30000, 30000, 0, 0, 30000, 30000, 0, 0)
            codestream += struct.pack(">H", 1) + b"\x0f\x01\x01"
            ds.PixelData = pydicom.encaps.encapsulate([bytes(codestream)])
            ds.file_meta.TransferSyntaxUID = pydicom.uid.JPEG2000Lossless
            ds["PixelData"].VR = "OB"
            ds["PixelData"].is_undefined_length = True

    return dicom_folder(ws, "j2k", edit)


def mass_at_edge(ws: Workspace) -> Path:
    labels = sitk.ReadImage(str(ws.base["labels"]))
    arr = sitk.GetArrayFromImage(labels)
    z = np.nonzero((arr == 3).any(axis=(1, 2)))[0]
    cut = labels[:, :, int(z.min()) + 3 :]  # the crop ends inside the mass
    path = ws.root / "edge_labels.nii.gz"
    sitk.WriteImage(cut, str(path))
    return path


def markups(ws: Workspace, name: str, points) -> Path:
    path = ws.root / name
    control = [{"label": lab, "description": lab, "position": pos} for lab, pos in points]
    path.write_text(
        json.dumps(
            {"markups": [{"type": "Fiducial", "coordinateSystem": "LPS", "controlPoints": control}]}
        )
    )
    return path


def perturbed_t1(ws: Workspace, angle_deg=9.9, offset_mm=5.9) -> tuple[Path, sitk.Euler3DTransform]:
    """The real T1 moved by a known rigid transform (header only)."""
    t1 = sitk.ReadImage(str(SHARED / "sct_errsm30" / "t1w.nii.gz"))
    rng = np.random.default_rng(7)
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    direction = rng.normal(size=3)
    direction *= offset_mm / np.linalg.norm(direction)
    centre = t1.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in t1.GetSize()])
    move = sitk.VersorRigid3DTransform()
    move.SetCenter(centre)
    move.SetRotation(tuple(axis), float(np.deg2rad(angle_deg)))
    move.SetTranslation(tuple(direction))
    # Points p of the T1 go to move(p): new origin and direction follow.
    matrix = np.array(move.GetMatrix()).reshape(3, 3)
    moved = sitk.Image(t1)
    moved.SetOrigin(move.TransformPoint(t1.GetOrigin()))
    moved.SetDirection(tuple((matrix @ np.array(t1.GetDirection()).reshape(3, 3)).ravel()))
    path = ws.root / "t1_perturbed.nii.gz"
    sitk.WriteImage(moved, str(path))
    return path, move


def registration_check(move, unperturbed: Path):
    """Within 1 mm of the truth in the cord: the T1 as registered unperturbed, then ``move``.

    The T1 and T2 agree in world space only to about 1 mm, so the truth for the moved T1 is
    the registration of the unmoved pair (same program) followed by the known move.
    """

    def check(code, stdout, stderr, ws):
        if code != 0:
            return "refused" if code == 2 else "failed"
        transform = sitk.ReadTransform(str(ws.root / "reg" / "t1.tfm"))
        before = sitk.ReadTransform(str(unperturbed))
        fixed = sitk.ReadImage(str(SHARED / "sct_errsm30" / "t2.nii.gz"))
        cord = sitk.GetArrayFromImage(
            sitk.ReadImage(str(SHARED / "sct_errsm30" / "t2_seg-manual.nii.gz"))
        )
        points = [
            fixed.TransformIndexToPhysicalPoint([int(i), int(j), int(k)])
            for k, j, i in np.argwhere(cord > 0)[::20]
        ]
        errors = [
            np.linalg.norm(
                np.subtract(
                    transform.TransformPoint(p), move.TransformPoint(before.TransformPoint(p))
                )
            )
            for p in points
        ]
        worst = float(np.max(errors))
        return None if worst < 1.0 else f"{worst:.2f} mm off in the cord"

    return check


def cases(base: dict) -> list[Case]:
    t2, seeds, ct = base["t2"], base["seeds"], base["ct"]
    pet, labels = base["pet"], base["labels"]
    analyze = ["-q", "analyze", "--mri", t2, "--seeds", seeds, "--no-scene", "--out"]
    out = lambda ws, name="out": ws.root / name  # noqa: E731
    listed: list[Case] = []
    add = listed.append

    # 1. data loss ----------------------------------------------------------------------
    add(Case(1, "analyze --out a user's folder", lambda ws: [*analyze, ws.root / "d"]))
    add(Case(1, "analyze --out a home folder", lambda ws: [*analyze, ws.root / "home"]))
    add(
        Case(
            1,
            "metrics --out a user's folder",
            lambda ws: ["-q", "metrics", "--labels", labels, "--out", ws.root / "d"],
        )
    )
    add(Case(1, "phantom --out a user's folder", lambda ws: ["-q", "phantom", "--out", ws.root]))
    add(Case(1, "demo --out a user's folder", lambda ws: ["-q", "demo", "--out", ws.root / "d"]))

    def link_to_users(ws):
        (ws.root / "link").symlink_to(ws.root / "d")
        return [*analyze, ws.root / "link"]

    add(Case(1, "analyze --out a link to a user's folder", link_to_users))

    def rerun(ws):
        run_command(base["mescc"], [*analyze, ws.root / "again"])
        return [*analyze, ws.root / "again"]

    add(
        Case(
            1,
            "analyze --out its own previous result (replaced)",
            rerun,
            expect="result",
            check=lambda c, o, e, ws: (
                None if (ws.root / "again" / "metrics.json").is_file() else "no metrics.json"
            ),
        )
    )

    # 4. hangs ----------------------------------------------------------------------------
    def fifo(ws):
        folder = dicom_folder(ws, "fifo", lambda ds, i: None, both=False)
        os.mkfifo(folder / "pipe.dcm")
        return ["-q", "info", folder]

    def zero_link(ws):
        folder = dicom_folder(ws, "zero", lambda ds, i: None, both=False)
        (folder / "zero.dcm").symlink_to("/dev/zero")
        return ["-q", "info", folder]

    ok_info = lambda c, o, e, ws: None if "PT" in o or "PET" in o else "no description"  # noqa: E731
    for name, maker in (("named pipe", fifo), ("link to /dev/zero", zero_link)):
        add(Case(4, f"info on a DICOM folder with a {name}", maker, "result", ok_info))

    # 5. tracebacks on bad input ----------------------------------------------------------------
    def set_attr(keyword, value):
        return lambda ds, i: setattr(ds, keyword, value)

    for name, edit, says in (
        ("empty Rows", set_attr("Rows", None), "Rows"),
        ("zero pixel spacing", set_attr("PixelSpacing", [0, 0]), "spacing"),
        ("negative pixel spacing", set_attr("PixelSpacing", [-4.07, -4.07]), "spacing"),
    ):
        add(Case(5, f"info on DICOM with {name}", lambda ws, e=edit, n=name: [
            "-q", "info", dicom_folder(ws, n.replace(" ", "_"), e)], must_say=says))  # fmt: skip

    def scan_2099(ds, i):
        ds.AcquisitionDate = ds.SeriesDate = "20990101"
        seq = ds.RadiopharmaceuticalInformationSequence[0]
        seq.RadiopharmaceuticalStartDateTime = "20260101090000"

    add(
        Case(
            5,
            "suv of a PET scanned in 2099",
            lambda ws: [
                "-q",
                "suv",
                dicom_folder(ws, "pet2099", scan_2099),
                "--out",
                out(ws, "s.nii.gz"),
            ],
            outputs=[],
        )
    )
    add(
        Case(
            5,
            "segment with a markups point labelled other99999",
            lambda ws: [
                "-q", "segment", "--image", t2, "--out", out(ws, "seg.nii.gz"), "--seeds",
                markups(ws, "p.mrk.json", [("cord", [0, 0, 0]), ("other99999", [1, 1, 1])]),
            ],
        )
    )  # fmt: skip
    add(
        Case(
            5,
            "metrics --labels SEEDS",
            lambda ws: ["-q", "metrics", "--labels", seeds, "--out", out(ws)],
        )
    )

    def bad_out(where):
        def make(ws):
            target = {
                "below-a-file": ws.root / "notes.txt" / "out",
                "cwd": ".",
                "parent": "..",
            }.get(where, where)
            return [*analyze, target]

        return make

    for where in ("/dev/full/x", "below-a-file", "/proc/self/x", "cwd", "parent"):
        add(Case(5, f"analyze --out {where}", bad_out(where)))

    def read_only(ws, mescc):
        folder = ws.root / "ro"
        folder.mkdir()
        subprocess.run(["mount", "--bind", "-o", "ro", folder, folder], check=True)
        try:
            case = Case(5, "", [*analyze, folder / "out"])
            return run_case(case, ws, mescc)
        finally:
            subprocess.run(["umount", folder], check=True)

    add(Case(5, "analyze --out on a read-only mount", [], needs_root=True, runner=read_only))

    # 6. invalid geometry -------------------------------------------------------------------------
    def position_nan(ds, i):
        if i:
            ds.ImagePositionPatient = [0, 0, "NaN"]

    add(Case(6, "info on DICOM with a NaN position", lambda ws: [
        "-q", "info", dicom_folder(ws, "posnan", position_nan)], must_say="position"))  # fmt: skip
    add(Case(6, "info on DICOM with an all-zero orientation", lambda ws: [
        "-q", "info", dicom_folder(ws, "iop0", set_attr("ImageOrientationPatient", [0] * 6))],
        must_say="orientation"))  # fmt: skip
    add(
        Case(
            6,
            "info on a NIfTI with a negative dimension",
            lambda ws: [
                "-q",
                "info",
                cube_nifti(ws.root / "neg.nii.gz", dims=(3, 10, -1, 10, 1, 1, 1, 1)),
            ],
        )
    )
    for name, pixdim in (("zero", (0.0, 1.0, 1.0)), ("NaN", (1.0, float("nan"), 1.0))):
        add(Case(6, f"info on a NIfTI with a {name} pixel size", lambda ws, p=pixdim, n=name: [
            "-q", "info", cube_nifti(ws.root / f"pix{n}.nii.gz", pixdim=p)]))  # fmt: skip

    def qs_disagree(ws):
        shifted = [[1, 0, 0, 50.0], [0, 1, 0, 0], [0, 0, 1, 0]]  # 50 mm from the qform
        path = cube_nifti(
            ws.root / "qs.nii.gz", qform=(1, (0, 0, 0), (0, 0, 0)), sform=(1, shifted)
        )
        return ["-q", "info", path]

    add(Case(6, "info on a NIfTI whose qform and sform disagree", qs_disagree))
    add(
        Case(
            6,
            "segment on a NIfTI with NaN voxels",
            lambda ws: [
                "-q", "segment", "--image", cube_nifti(ws.root / "nan.nii.gz", nan=True),
                "--seeds", markups(ws, "s.mrk.json", [("cord", [1, 1, 1]), ("csf", [8, 8, 8])]),
                "--out", out(ws, "seg.nii.gz"),
            ],
        )
    )  # fmt: skip

    def nan_mha(ws):
        image = sitk.ReadImage(str(ct))
        arr = sitk.GetArrayFromImage(image).astype(np.float32)
        arr[10:12, 10:12, 10:12] = np.nan
        moved = sitk.GetImageFromArray(arr)
        moved.CopyInformation(image)
        path = ws.root / "nan_ct.mha"
        sitk.WriteImage(moved, str(path))
        return ["-q", "register", "--fixed", t2, "--moving", path, "--out", out(ws, "t.tfm")]

    add(
        Case(
            6,
            "register a CT with NaN voxels (message names NaN)",
            nan_mha,
            must_say=r"NaN|not a number",
        )
    )

    # 7. implausible values -------------------------------------------------------------------
    def year_before(ds, i):
        seq = ds.RadiopharmaceuticalInformationSequence[0]
        start = str(ds.SeriesDate)
        seq.RadiopharmaceuticalStartDateTime = f"{int(start[:4]) - 1}{start[4:]}090000"
        seq.RadiopharmaceuticalStartTime = "090000"

    add(
        Case(
            7,
            "suv with an injection a year before the scan",
            lambda ws: [
                "-q",
                "suv",
                dicom_folder(ws, "year", year_before),
                "--out",
                out(ws, "s.nii.gz"),
            ],
        )
    )
    add(
        Case(
            7,
            "metrics of a mass touching the image edge (lower bound said)",
            lambda ws: ["metrics", "--labels", mass_at_edge(ws), "--out", out(ws)],
            expect="result",
            check=lambda c, o, e, ws: (
                None
                if re.search(r"edge|lower bound", o + e, re.I)
                else "no word that the volume is a lower bound"
            ),
        )
    )

    # 8. resources ---------------------------------------------------------------------------------
    def huge_header(ws):
        header = nifti_header((3, 1500, 1500, 1500, 1, 1, 1, 1), (1, 1, 1, 1, 1, 1, 1, 1))
        return ["-q", "info", write_nifti(ws.root / "huge.nii.gz", header)]

    add(Case(8, "info on an 85-byte NIfTI claiming 1500^3 voxels", huge_header, limits=(10, 1500)))

    def j2k(ws):
        return ["-q", "info", j2k_truncated(ws)]

    add(
        Case(
            8,
            "info on a truncated JPEG 2000 slice (message names the file)",
            j2k,
            must_say=r"slice1\.dcm",
            limits=(10, 1500),
        )
    )

    # 9. messages ------------------------------------------------------------------------------------
    def seeds_case(name, make):
        return Case(9, f"analyze with {name} (message names the seeds)", lambda ws: [
            "-q", "analyze", "--mri", t2, "--no-scene", "--out", out(ws), "--seeds", make(ws)],
            must_name="--seeds")  # fmt: skip

    def seeds_image(arr_edit, grid=None, suffix=".nii.gz"):
        def make(ws):
            image = sitk.ReadImage(str(seeds))
            arr = sitk.GetArrayFromImage(image)
            arr = arr_edit(arr)
            new = sitk.GetImageFromArray(arr)
            new.CopyInformation(image) if grid is None else new.SetSpacing(grid)
            path = ws.root / f"seeds_{len(os.listdir(ws.root))}{suffix}"
            sitk.WriteImage(new, str(path))
            return path

        return make

    listed += [
        seeds_case("missing seeds", lambda ws: ws.root / "nothing.nii.gz"),
        seeds_case("seeds that are text", lambda ws: _write(ws.root / "s.nii.gz", b"not an image")),
        seeds_case("empty seeds", seeds_image(lambda a: np.zeros_like(a))),
        seeds_case("seeds on another grid", seeds_image(lambda a: a[::2], grid=(2.0, 2.0, 2.0))),
        seeds_case("seeds with one label", seeds_image(lambda a: (a == 1).astype(a.dtype))),
        seeds_case(
            "fractional seeds", seeds_image(lambda a: a.astype(np.float32) + np.float32(0.5))
        ),
        seeds_case("negative seeds", seeds_image(lambda a: a.astype(np.int16) - 1)),
        seeds_case("malformed markups", lambda ws: _write(ws.root / "m.mrk.json", b"{not json")),
        seeds_case(
            "markups outside the image",
            lambda ws: markups(ws, "far.mrk.json", [("cord", [9e3, 9e3, 9e3])]),
        ),
        seeds_case(
            "markups with unknown labels",
            lambda ws: markups(ws, "unk.mrk.json", [("liver", [0, 0, 0])]),
        ),
    ]
    add(
        Case(
            9,
            "info on a file name with a newline (one line)",
            lambda ws: ["-q", "info", ws.root / "bad\nname.nii.gz"],
        )
    )

    def unicode_name(ws):
        shutil.copy(t2, ws.root / "Müller.nii.gz")
        return ["-q", "info", ws.root / "Müller.nii.gz"]

    add(
        Case(
            9,
            "info on a unicode name with an ASCII terminal",
            unicode_name,
            expect="result",
            check=lambda c, o, e, ws: None if "M\\xfcller" in o else "name not shown escaped",
            env={"PYTHONIOENCODING": "ascii"},
        )
    )

    def full_disk(ws, mescc):
        disk = ws.root / "disk"
        disk.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=600k", "tmpfs", disk], check=True)
        try:
            outcome = run_case(Case(9, "", [*analyze, disk / "analysis"]), ws, mescc)
            left = sorted(os.listdir(disk))
        finally:
            subprocess.run(["umount", disk], check=True)
        if outcome.status == "error" and (left or str(disk / "analysis") not in outcome.detail):
            outcome.status, outcome.detail = "wrong", f"left {left}: {outcome.detail}"
        return outcome

    add(Case(9, "analyze onto a full disk", [], needs_root=True, runner=full_disk))

    # 10. leftovers and races ------------------------------------------------------------------------
    def kills(ws, mescc):
        env = dict(os.environ, **mescc["env"])
        # Time one whole run, then kill five runs late in theirs: in the write stage.
        code, _, _, whole_s, _ = run_command(mescc, [*analyze, ws.root / "timed"])
        for fraction in (0.75, 0.85, 0.9, 0.95, 0.98):
            delay = fraction * whole_s
            child = subprocess.Popen(
                [*mescc["cmd"], *map(str, [*analyze, ws.root / "killed"])],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(timeout=delay)
            child.kill()
            child.wait()
        # A later run of the same command must not see (and must remove) the leftovers.
        code, *_ = run_command(mescc, [*analyze, ws.root / "killed"])
        seen = len(ws.leftovers())
        if code == 0 and seen == 0 and whole_s > 0:
            return Outcome("result", "5 kills, then a complete run, nothing left over")
        return Outcome("wrong", f"exit {code}, {seen} leftovers after a later run")

    add(Case(10, "kill -9 during analyze, five times", [], runner=kills))

    def race(ws, mescc):
        script = (
            "import sys\nfrom MESCCAnalyzerLib.outputs import atomic_dir\n"
            "bad = 0\nfor i in range(300):\n    try:\n"
            "        with atomic_dir(sys.argv[1]) as t:\n            (t / 'n.txt').write_text(str(i))\n"
            "    except Exception as e:\n        bad += 1\nprint(bad)\n"
        )
        env = dict(os.environ, **mescc["env"])
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", script, ws.root / "shared"],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
            for _ in range(2)
        ]
        failures = sum(int(p.communicate(timeout=300)[0].strip() or 300) for p in procs)
        if failures == 0 and not ws.leftovers():
            return Outcome("result", "600 replacements by two writers, none failed")
        return Outcome("wrong", f"{failures} of 600 replacements raised")

    add(Case(10, "two writers replacing one folder", [], runner=race))

    # 11. privacy ------------------------------------------------------------------------------------
    def modes(code, stdout, stderr, ws):
        loose = [
            str(p)
            for p in [ws.root / "priv", *(ws.root / "priv").rglob("*")]
            if p.stat().st_mode & 0o077
        ]
        return None if not loose else f"{len(loose)} outputs readable by others"

    add(
        Case(
            11,
            "analyze with a PET naming the patient: owner-only files",
            lambda ws: [*analyze[:-1], "--ct", ct, "--pet", pet, "--out", ws.root / "priv"],
            expect="result",
            check=modes,
        )
    )

    def nhdr(ws):
        header = ws.root / "steal.nhdr"
        header.write_text(
            "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"
            "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
            "data file: /etc/passwd\n"
        )
        return ["-q", "info", header]

    add(Case(11, "info on a .nhdr pointing at /etc/passwd", nhdr))

    def outside_root(ws):
        study = ws.root / "served"
        study.mkdir()
        for name in ("t2.nii.gz", "t1.nii.gz", "ct.nii.gz"):
            (study / name).symlink_to(base["study"] / name)
        return ["-q", "serve", "--study", study, "--allowed-root", ws.root, "--port", free_port()]

    add(Case(11, "serve a study whose files link outside --allowed-root", outside_root))

    # 12. registration ---------------------------------------------------------------------------------
    def perturbed(ws):
        t2_real = SHARED / "sct_errsm30" / "t2.nii.gz"
        t1_real = SHARED / "sct_errsm30" / "t1w.nii.gz"
        reference = ws.root / "reg0" / "t1.tfm"
        run_command(
            base["mescc"],
            ["-q", "register", "--fixed", t2_real, "--moving", t1_real, "--out", reference],
        )
        path, move = perturbed_t1(ws)
        perturbed.check = registration_check(move, reference)
        return [
            "-q", "register", "--fixed", t2_real, "--moving", path,
            "--out", ws.root / "reg" / "t1.tfm",
        ]  # fmt: skip

    add(
        Case(
            12,
            "register the real T1 moved by 9.9 deg and 5.9 mm",
            perturbed,
            expect="result",
            check=lambda c, o, e, ws: perturbed.check(c, o, e, ws),
        )
    )
    return listed


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ---------------------------------------------------------------------------------------
# mescc serve: a foreign page
# ---------------------------------------------------------------------------------------
def serve_cases(base: dict) -> list[Case]:
    """Cases against a running ``mescc serve --demo`` (one server for all of them)."""

    def with_server(check):
        def runner(ws, mescc):
            port = free_port()
            env = dict(os.environ, **mescc["env"])
            log = ws.root / "serve.log"
            with open(log, "w") as handle:
                server = subprocess.Popen(
                    [*mescc["cmd"], "serve", "--demo", "--port", str(port), "--out", ws.root / "s"],
                    env=env,
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            try:
                url = None
                for _ in range(600):
                    text = log.read_text()
                    match = re.search(r"https?://127\.0\.0\.1:\d+/\S*", text)
                    if match or "session files" in text:
                        with contextlib.suppress(OSError):
                            socket.create_connection(("127.0.0.1", port), timeout=1).close()
                            url = match.group(0) if match else f"http://127.0.0.1:{port}/"
                            break
                    if server.poll() is not None:
                        return Outcome("wrong", "the server stopped: " + text[-160:])
                    time.sleep(0.2)
                if url is None:
                    return Outcome("hang", "the server did not start")
                return check(port, url, server.pid)
            finally:
                os.killpg(server.pid, signal.SIGTERM)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.wait(timeout=10)
                if server.poll() is None:
                    os.killpg(server.pid, signal.SIGKILL)

        return runner

    def handshake(port, headers, path="/ws"):
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            request = f"GET {path} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()
            )
            request += (
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            s.sendall(request.encode())
            return s.recv(4096).decode("latin-1").split("\r\n", 1)[0]

    def refused(headers_for):
        def check(port, url, pid):
            status = handshake(port, headers_for(port, url))
            if " 101 " in status:
                return Outcome("wrong", "the websocket upgrade was accepted")
            return Outcome("error", f"refused: {status}")

        return check

    def token_of(url):
        match = re.search(r"token=([^&\s]+)", url)
        return match.group(1) if match else ""

    def ws_path(url, token=None):
        token = token_of(url) if token is None else token
        return f"/ws?token={token}" if token else "/ws"

    def foreign_origin(port, url):
        return {"Host": f"127.0.0.1:{port}", "Origin": "http://evil.example"}

    def foreign_host(port, url):
        return {"Host": f"evil.example:{port}", "Origin": f"http://evil.example:{port}"}

    def no_token(port, url):
        return {"Host": f"127.0.0.1:{port}", "Origin": f"http://127.0.0.1:{port}"}

    def huge_frame(port, url, pid):
        def rss():
            return int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text())[1])

        before = sum(rss() for _ in range(1))
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            headers = no_token(port, url)
            request = f"GET {ws_path(url)} HTTP/1.1\r\n" + "".join(
                f"{k}: {v}\r\n" for k, v in headers.items()
            )
            request += (
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            )
            s.sendall(request.encode())
            s.recv(4096)
            # A binary frame announcing 1 GB (masked, as a client must), then a little data.
            frame = bytes([0x82, 0x80 | 127]) + struct.pack(">Q", 1 << 30) + b"\0\0\0\0"
            with contextlib.suppress(OSError):
                s.sendall(frame + b"\0" * 1024)
                time.sleep(2.0)
        grown_mb = (rss() - before) / 1024
        if grown_mb < 100:
            return Outcome("error", f"server grew by {grown_mb:.0f} MB")
        return Outcome("wrong", f"server grew by {grown_mb:.0f} MB on a 16-byte frame")

    return [
        Case(2, "serve: websocket from a foreign Origin", [], runner=with_server(refused(foreign_origin))),
        Case(2, "serve: websocket with a foreign Host (DNS rebinding)", [], runner=with_server(refused(foreign_host))),
        Case(2, "serve: websocket without the token", [], runner=with_server(refused(no_token))),
        Case(3, "serve: a frame announcing 1 GB", [], runner=with_server(huge_frame)),
    ]  # fmt: skip


# ---------------------------------------------------------------------------------------
def prepare(mescc, root: Path) -> dict:
    """The study every case starts from: ``mescc demo`` (phantom, seeds, analysis)."""
    code, stdout, stderr, *_ = run_command(
        mescc, ["-q", "demo", "--out", root / "demo", "--no-scene"], timeout=600
    )
    if code != 0:
        raise SystemExit(f"mescc demo failed; cannot run the battery:\n{stderr}")
    study = root / "demo" / "study"
    return {
        "study": study,
        "t2": study / "t2.nii.gz",
        "ct": study / "ct.nii.gz",
        "pet": study / "pet_dicom",
        "labels": study / "labels.nii.gz",
        "seeds": root / "demo" / "seeds.nii.gz",
        "mescc": mescc,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default=str(HERE.parent), help="source tree to test")
    parser.add_argument("--only", type=int, action="append", help="run the cases of this item")
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--json", help="write the outcomes here")
    args = parser.parse_args(argv)
    mescc = {
        "cmd": [sys.executable, "-m", "MESCCAnalyzerLib.cli"],
        "env": {
            "PYTHONPATH": str(Path(args.source).resolve() / "MESCCAnalyzer"),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
    }
    root = Path(tempfile.mkdtemp(prefix="mescc_battery."))
    try:
        base = prepare(mescc, root)
        listed = cases(base) + serve_cases(base)
        if args.only:
            listed = [c for c in listed if c.item in args.only]
        results = []
        for i, case in enumerate(listed):
            if case.needs_root and os.geteuid() != 0:
                results.append((case, Outcome("skipped", "needs root")))
                continue
            ws = Workspace(root / f"case{i:03d}", base)
            cwd = os.getcwd()
            os.chdir(ws.root)
            try:
                outcome = run_case(case, ws, mescc)
            except Exception as exc:  # the battery's own set-up failing is reported, not hidden
                outcome = Outcome("wrong", f"battery set-up failed: {exc!r}"[:160])
            finally:
                os.chdir(cwd)
            deleted, left = ws.deleted(), ws.leftovers()
            outcome.deleted, outcome.left = deleted, left
            results.append((case, outcome))
            flag = " DELETED " + ", ".join(deleted) if deleted else ""
            flag += f" LEFTOVERS {len(left)}" if left else ""
            print(
                f"{case.item:>2} {outcome.status:<9} {outcome.seconds:6.1f} s "
                f"{outcome.peak_mb:7.0f} MB  {case.name}{flag}"
                + (f"\n{'':>31}{outcome.detail}" if args.verbose or outcome.status not in ("error", "result") else ""),
                flush=True,
            )  # fmt: skip
        counts = {}
        for _, outcome in results:
            counts[outcome.status] = counts.get(outcome.status, 0) + 1
        deleted = sum(len(o.deleted) for _, o in results if hasattr(o, "deleted"))
        left = sum(len(o.left) for _, o in results if hasattr(o, "left"))
        print(
            f"\n{len(results)} cases: {counts.get('error', 0)} one-line errors, "
            f"{counts.get('result', 0)} correct results, {counts.get('traceback', 0)} tracebacks, "
            f"{counts.get('hang', 0)} hangs, {counts.get('wrong', 0)} wrong, "
            f"{counts.get('skipped', 0)} skipped; {deleted} user files deleted, "
            f"{left} hidden leftovers"
        )
        if args.json:
            Path(args.json).write_text(
                json.dumps(
                    [
                        {"item": c.item, "case": c.name, "status": o.status, "detail": o.detail,
                         "seconds": round(o.seconds, 2), "peak_mb": round(o.peak_mb)}
                        for c, o in results
                    ],
                    indent=1,
                )
            )  # fmt: skip
        good = counts.get("error", 0) + counts.get("result", 0)
        return (
            0 if good == len(results) - counts.get("skipped", 0) and not deleted and not left else 1
        )
    finally:
        for mount in sorted(root.rglob("*")):
            if os.path.ismount(mount):
                subprocess.run(["umount", mount], check=False)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
