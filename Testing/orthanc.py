"""Orthanc as a throw-away PACS on loopback ports (Debian's orthanc package): used by
``Testing/test_pacs.py`` and ``benchmarks/bench_pacs.py``."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from MESCCAnalyzerLib.export import DicomNode

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
