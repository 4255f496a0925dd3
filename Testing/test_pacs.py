"""A real PACS: Debian's Orthanc, started by the tests on free loopback ports with a
throw-away storage folder. The phantom study is stored in it, ``mescc analyze --from ...
--send ...`` takes the study from it and sends the SEG, SR and RTSTRUCT back, and the results
are read back from Orthanc's REST API. Orthanc is stopped in ``finally``.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.export import DicomNode, store
from MESCCAnalyzerLib.outputs import write_image
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels

ORTHANC = shutil.which("Orthanc") or shutil.which("orthanc")
PACS_AET = "TESTPACS"
OUR_AET = "MESCC"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Orthanc:
    """An Orthanc process on loopback ports with its own storage, known only to mescc."""

    def __init__(self, folder: Path):
        if ORTHANC is None:
            raise RuntimeError(
                "the PACS tests need Orthanc (Debian's orthanc package): run .ci/run, which "
                "installs it, or apt-get install orthanc"
            )
        self.folder = folder
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "mescc-test",
            "StorageDirectory": str(folder / "storage"),
            "IndexDirectory": str(folder / "index"),
            "HttpPort": self.http_port,
            "DicomPort": self.dicom_port,
            "DicomAet": PACS_AET,
            "DicomCheckCalledAet": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "HttpServerEnabled": True,
            "DicomServerEnabled": True,
            # only mescc on this machine may talk to it
            "DicomAlwaysAllowEcho": False,
            "DicomAlwaysAllowStore": False,
            "DicomCheckModalityHost": True,
            "DicomModalities": {"mescc": [OUR_AET, "127.0.0.1", free_port()]},
            "Plugins": [],
            "SaveJobs": False,
            "ConcurrentJobs": 1,
        }
        (folder / "orthanc.json").write_text(json.dumps(config, indent=2))
        self.log = open(folder / "orthanc.log", "w")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [ORTHANC, str(folder / "orthanc.json")],
            cwd=folder,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.node = DicomNode(PACS_AET, "127.0.0.1", self.dicom_port)

    def rest(self, path: str, data: bytes | None = None):
        url = f"http://127.0.0.1:{self.http_port}{path}"
        with urllib.request.urlopen(url, data=data, timeout=10) as answer:
            return json.loads(answer.read())

    def wait_until_ready(self, timeout_s: float = 30.0) -> None:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise RuntimeError(f"Orthanc exited: {(self.folder / 'orthanc.log').read_text()}")
            try:
                self.rest("/system")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("Orthanc did not answer on its REST port")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()

    def study_series(self, study_uid: str) -> dict[str, list[str]]:
        """SOPInstanceUIDs by modality of the study's series."""
        found = self.rest("/tools/lookup", study_uid.encode())
        study = next(f["ID"] for f in found if f["Type"] == "Study")
        by_modality: dict[str, list[str]] = {}
        for series in self.rest(f"/studies/{study}/series"):
            modality = series["MainDicomTags"]["Modality"]
            for instance in self.rest(f"/series/{series['ID']}/instances"):
                uid = instance["MainDicomTags"]["SOPInstanceUID"]
                by_modality.setdefault(modality, []).append(uid)
        return by_modality


@pytest.fixture(scope="module")
def a_pacs(tmp_path_factory):
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        pacs.wait_until_ready()
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(scope="module")
def a_stored_study(a_pacs, phantom_dir, tmp_path_factory):
    """The phantom's T2, CT and PET series stored in the PACS: (study UID, seeds file)."""
    study = phantom_dir("2", 0)
    files = [p for name in ("t2_dicom", "ct_dicom", "pet_dicom") for p in (study / name).iterdir()]
    datasets = [pydicom.dcmread(p) for p in sorted(files)]
    assert store(a_pacs.node, datasets, calling_aet=OUR_AET) == len(datasets)
    seeds = tmp_path_factory.mktemp("seeds") / "seeds.nii.gz"
    labels = sitk.ReadImage(str(study / "labels.nii.gz"))
    write_image(strokes_from_labels(labels, rng_seed=0), seeds)
    return str(datasets[0].StudyInstanceUID), seeds


@pytest.fixture(scope="module")
def a_round_trip(a_pacs, a_stored_study, tmp_path_factory):
    """``mescc analyze --from PACS --study UID --send PACS``: (output folder, seconds)."""
    study_uid, seeds = a_stored_study
    out = tmp_path_factory.mktemp("round_trip")
    node = str(a_pacs.node)
    args = ["-q", "analyze", "--from", node, "--study", study_uid, "--seeds", str(seeds)]
    args += ["--out", str(out / "analysis"), "--dicom-out", str(out / "dicom"), "--send", node]
    t0 = time.perf_counter()
    assert main([*args, "--no-scene"]) == 0
    return out, time.perf_counter() - t0


def test_the_study_is_retrieved_analysed_and_the_objects_stored_under_it(
    a_pacs, a_stored_study, a_round_trip
):
    out, seconds = a_round_trip
    series = a_pacs.study_series(a_stored_study[0])
    assert sorted(series) == ["CT", "MR", "PT", "RTSTRUCT", "SEG", "SR"]
    for modality, name in (("SEG", "seg.dcm"), ("SR", "sr.dcm"), ("RTSTRUCT", "rtstruct.dcm")):
        local = pydicom.dcmread(out / "dicom" / name, stop_before_pixels=True)
        assert series[modality] == [local.SOPInstanceUID]
    # the goal for the demo study (about 15 s on 2 cores; the margin absorbs load)
    assert seconds < 60


def test_the_analysis_of_the_retrieved_study_used_its_ct_and_pet(a_round_trip):
    out, _ = a_round_trip
    metrics = json.loads((out / "analysis" / "metrics.json").read_text())
    assert (out / "analysis" / "ct_to_mri.tfm").is_file()
    assert metrics["suv_max"] > 3  # the phantom's mass: SUV about 7
    assert metrics["bilsky_grade"] == "2"


def test_a_node_that_refuses_the_association_stops_the_analysis_before_anything(
    a_pacs, a_stored_study, tmp_path, capsys
):
    study_uid, seeds = a_stored_study
    before = a_pacs.study_series(study_uid)
    wrong = f"NOTPACS@127.0.0.1:{a_pacs.dicom_port}"  # Orthanc checks the called title
    args = ["analyze", "--from", str(a_pacs.node), "--study", study_uid, "--seeds", str(seeds)]
    args += ["--out", str(tmp_path / "a"), "--dicom-out", str(tmp_path / "d"), "--send", wrong]
    assert main([*args, "--no-scene"]) == 2
    err = capsys.readouterr().err
    assert f"the DICOM node {wrong} refused the association" in err
    assert list(tmp_path.iterdir()) == []
    assert a_pacs.study_series(study_uid) == before


def test_an_unknown_study_is_named_in_the_error(a_pacs, a_stored_study, tmp_path, capsys):
    _, seeds = a_stored_study
    args = ["analyze", "--from", str(a_pacs.node), "--study", "1.2.3.4", "--seeds", str(seeds)]
    assert main([*args, "--out", str(tmp_path / "a"), "--no-scene"]) == 2
    assert "sent no image of study 1.2.3.4" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
