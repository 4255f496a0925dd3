"""The DICOM network client (pynetdicom): store the exports on a DICOM node (C-STORE) and
fetch a study from one (C-GET).

A node is written ``AET@HOST:PORT`` (its application entity title, host and port). mescc
calls as :data:`DEFAULT_AET` unless told otherwise; a PACS must know that title (and, for
C-GET, allow it to retrieve). Every failure is one sentence (:class:`DicomNetworkError`,
exit status 2 on the command line) naming the node and what it answered.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    Comprehensive3DSRStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    EnhancedMRImageStorage,
    EnhancedPETImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
    PositronEmissionTomographyImageStorage,
    RTStructureSetStorage,
    SegmentationStorage,
)
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet, Verification

from ..errors import MESCCError

DEFAULT_AET = "MESCC"
TIMEOUT_S = 30.0
RETRIEVED_CLASSES = (
    MRImageStorage,
    EnhancedMRImageStorage,
    CTImageStorage,
    EnhancedCTImageStorage,
    PositronEmissionTomographyImageStorage,
    EnhancedPETImageStorage,
)
"""The image storage classes a C-GET of a study accepts (the rest of a study is not needed)."""
EXPORT_CLASSES = (SegmentationStorage, Comprehensive3DSRStorage, RTStructureSetStorage)
"""What ``--send`` stores."""

_AET = re.compile(r"^[\x21-\x5b\x5d-\x7e](?:[\x20-\x5b\x5d-\x7e]{0,14}[\x21-\x5b\x5d-\x7e])?$")


class DicomNetworkError(MESCCError):
    """A DICOM node could not be reached, refused, or answered with a failure."""


@dataclass(frozen=True)
class DicomNode:
    """A DICOM application entity: title, host, port."""

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.aet}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> DicomNode:
        """``AET@HOST:PORT`` (an IPv6 host in brackets: ``AET@[::1]:104``)."""
        aet, at, rest = str(text).partition("@")
        host, colon, port = rest.rpartition(":")
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        if not (at and colon and host and port.isdigit() and 0 < int(port) < 65536):
            raise DicomNetworkError(
                f"{text!r} is not a DICOM node",
                hint="write it AET@HOST:PORT, e.g. ORTHANC@pacs:4242",
            )
        check_aet(aet)
        return cls(aet, host, int(port))


def check_aet(aet: str) -> str:
    """An application entity title: 1-16 printable ASCII characters, no backslash."""
    if not _AET.match(aet or ""):
        raise DicomNetworkError(
            f"{aet!r} is not an application entity title",
            hint="1 to 16 ASCII letters, digits or symbols, no backslash",
        )
    return aet


def _ae(calling_aet: str) -> AE:
    ae = AE(ae_title=check_aet(calling_aet))
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT_S
    return ae


def _reachable(node: DicomNode) -> None:
    try:
        with socket.create_connection((node.host, node.port), timeout=TIMEOUT_S):
            pass
    except OSError as exc:
        raise DicomNetworkError(
            f"cannot reach the DICOM node {node}: {exc.strerror or exc}",
            hint="check the host and port, and that the node is running",
        ) from None


def _associate(ae: AE, node: DicomNode, **kwargs):
    _reachable(node)
    try:
        assoc = ae.associate(node.host, node.port, ae_title=node.aet, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise DicomNetworkError(f"cannot reach the DICOM node {node}: {exc}") from None
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        why = "refused the association"
        hint = f"the node must know the calling title {ae.ae_title} (and its host)"
    elif assoc.is_aborted:
        why, hint = "aborted the association", "check the node's title and its log"
    else:
        why, hint = "did not answer", "check the host and port, and that the node is running"
    raise DicomNetworkError(f"the DICOM node {node} {why}", hint=hint)


def _storage_contexts(ae: AE, sop_classes: Iterable[str]) -> None:
    for uid in dict.fromkeys(sop_classes):
        ae.add_requested_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])


def check_node(
    node: DicomNode, *, calling_aet: str = DEFAULT_AET, sop_classes=EXPORT_CLASSES
) -> None:
    """Associate with ``node`` (C-ECHO, and the storage classes to be sent) and release:
    a node that refuses is found before any work is done."""
    ae = _ae(calling_aet)
    ae.add_requested_context(Verification)
    _storage_contexts(ae, sop_classes)
    assoc = _associate(ae, node)
    try:
        status = assoc.send_c_echo()
        if not status or status.Status != 0x0000:
            raise DicomNetworkError(f"the DICOM node {node} did not answer the echo (C-ECHO)")
        accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
        missing = [uid for uid in sop_classes if uid not in accepted]
        if missing:
            raise DicomNetworkError(
                f"the DICOM node {node} does not accept "
                + ", ".join(sorted({_name(uid) for uid in missing}))
            )
    finally:
        assoc.release()


def _name(uid: str) -> str:
    return UID(uid).name or uid


def store(node: DicomNode, datasets: Sequence[Dataset], *, calling_aet: str = DEFAULT_AET) -> int:
    """Send ``datasets`` to ``node`` (C-STORE); return how many were stored."""
    ae = _ae(calling_aet)
    _storage_contexts(ae, (str(ds.SOPClassUID) for ds in datasets))
    assoc = _associate(ae, node)
    try:
        for ds in datasets:
            try:
                status = assoc.send_c_store(ds)
            except (ValueError, RuntimeError) as exc:
                raise DicomNetworkError(
                    f"the DICOM node {node} cannot store a {_name(ds.SOPClassUID)}: {exc}"
                ) from None
            if not status or status.Status not in (0x0000, 0xB000, 0xB007, 0xB006):
                code = f"0x{status.Status:04X}" if status else "no answer"
                raise DicomNetworkError(
                    f"the DICOM node {node} did not store the {_name(ds.SOPClassUID)} "
                    f"(status {code})"
                )
    finally:
        assoc.release()
    return len(datasets)


def retrieve_study(
    node: DicomNode, study_uid: str, folder: Path, *, calling_aet: str = DEFAULT_AET
) -> list[Path]:
    """Fetch the images of study ``study_uid`` from ``node`` (C-GET) into ``folder``; return
    the files. Raises :class:`DicomNetworkError` when the node has no image of that study."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def on_store(event):
        ds = event.dataset
        ds.file_meta = event.file_meta
        path = folder / f"{len(written):05d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        written.append(path)
        return 0x0000

    ae = _ae(calling_aet)
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    _storage_contexts(ae, RETRIEVED_CLASSES)
    roles = [build_role(uid, scp_role=True) for uid in RETRIEVED_CLASSES]
    assoc = _associate(ae, node, ext_neg=roles, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    final = None
    try:
        for status, _ in assoc.send_c_get(query, StudyRootQueryRetrieveInformationModelGet):
            if status:
                final = status
    finally:
        assoc.release()
    code = f"0x{final.Status:04X}" if final else "no answer"
    if not written:
        raise DicomNetworkError(
            f"the DICOM node {node} sent no image of study {study_uid} (C-GET status {code})",
            hint=f"check the StudyInstanceUID, and that the node lets {calling_aet} retrieve",
        )
    if final is None or final.Status not in (0x0000, 0xB000):
        raise DicomNetworkError(
            f"the DICOM node {node} did not send all of study {study_uid} (C-GET status {code})"
        )
    return written
