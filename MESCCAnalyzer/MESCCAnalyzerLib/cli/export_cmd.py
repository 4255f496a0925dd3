"""``mescc export``: an analysis as DICOM SEG, SR and RTSTRUCT, written and/or sent to PACS."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..export import (
    DicomNode,
    build_exports,
    check_node,
    check_sources,
    load_analysis,
    store,
    write_exports,
)
from ..export.network import DEFAULT_AET
from ..io.study import load_volume
from ..outputs import check_output_dir, guard_outputs
from .args import add_prv_argument

HELP = "write an analysis as DICOM SEG, SR and RTSTRUCT (and send them to a DICOM node)"
DESCRIPTION = (
    "The analysis of mescc analyze (ANALYSIS_DIR) as DICOM objects referencing the original "
    "series: seg.dcm (SEG of the segmentation on the MRI), sr.dcm (TID 1500 measurement "
    "report), rtstruct.dcm (cord, cord PRV, thecal sac and lesions on the planning CT, with "
    "--ct) and planning.json (PRV volume, mass-sac and mass-cord gaps). --send stores the "
    "objects on a DICOM node (C-STORE)."
)
_IMAGE_FILES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def add_dicom_options(parser, *, out_required: bool) -> None:
    """The options ``mescc export`` and ``mescc analyze`` share."""
    if out_required:
        parser.add_argument("--out", required=True, help="output folder (written as a whole)")
    add_prv_argument(parser)
    parser.add_argument(
        "--send",
        metavar="AET@HOST:PORT",
        help="store the DICOM objects on this DICOM node (C-STORE)",
    )
    parser.add_argument(
        "--aet",
        default=DEFAULT_AET,
        help=f"this program's application entity title on the network (default {DEFAULT_AET})",
    )


def add_arguments(parser):
    parser.add_argument("analysis", metavar="ANALYSIS_DIR", help="output folder of mescc analyze")
    parser.add_argument("--mri", required=True, help="the MRI's DICOM series (folder) analysed")
    parser.add_argument("--ct", help="the planning CT's DICOM series (folder): adds rtstruct.dcm")
    add_dicom_options(parser, out_required=True)


def check_dicom_path(path, role: str) -> None:
    """Refuse early an input the DICOM exports cannot reference (a NIfTI/NRRD/MHA file)."""
    if path is not None and str(path).lower().endswith(_IMAGE_FILES):
        raise InputError(
            f"{role} is a {Path(path).name.split('.', 1)[-1]} file; the DICOM exports reference "
            "the original DICOM series by their UIDs",
            path=path,
            hint=f"give {role} as its DICOM series (folder)",
        )


def send_node(args) -> DicomNode | None:
    """The node of ``--send``, checked by an association (nothing is sent yet)."""
    if not args.send:
        return None
    node = DicomNode.parse(args.send)
    check_node(node, calling_aet=args.aet)
    return node


def write_and_send(exports, out: Path | None, node: DicomNode | None, args, term) -> None:
    """Write the objects (when ``out``) and then send them (when ``node``)."""
    if out is not None:
        term.stage("write DICOM")
        write_exports(exports, out)
    if node is not None:
        term.stage("send")
        store(node, list(exports.files().values()), calling_aet=args.aet)
    term.finish()


def summary(exports, out: Path | None, node: DicomNode | None) -> None:
    p = exports.planning
    print(
        f"cord PRV ({p['prv_margin_mm']:g} mm, {p['cord_prv_grid']} grid): "
        f"{p['cord_prv_volume_ml']:.2f} ml"
    )
    for gap in p["lesions"]:
        parts = []
        for what, key, flag in (
            ("sac", "mass_sac_min_distance_mm", "gap_sac_under_3mm"),
            ("cord", "mass_cord_min_distance_mm", "gap_cord_under_3mm"),
        ):
            if gap.get(key) is not None:
                mark = " (under 3 mm)" if gap[flag] else ""
                parts.append(f"gap to the {what} {gap[key]:.1f} mm{mark}")
        print(f"  lesion {gap['lesion']}: " + ", ".join(parts))
    names = ", ".join(exports.files())
    if out is not None:
        print(f"DICOM: {out} ({names})")
    if node is not None:
        print(f"sent to {node}: {names}")


def run(args, term) -> int:
    out = Path(args.out)
    check_dicom_path(args.mri, "the MRI")
    check_dicom_path(args.ct, "the CT")
    inputs = [args.analysis, args.mri] + ([args.ct] if args.ct else [])
    guard_outputs([out], inputs)
    check_output_dir(out)
    node = send_node(args)
    term.stage("load")
    mri = load_volume(args.mri, modality="MR" if Path(args.mri).is_dir() else None)
    ct = (
        load_volume(args.ct, modality="CT" if Path(args.ct).is_dir() else None) if args.ct else None
    )
    saved = load_analysis(args.analysis, mri.image)
    sources = check_sources(mri, ct, saved.mri_to_ct)
    term.stage("build DICOM")
    exports = build_exports(
        sources, saved.labels, saved.metrics, lesion_map=saved.lesion_map, prv_mm=args.prv_mm
    )
    write_and_send(exports, out, node, args, term)
    summary(exports, out, node)
    return 0
