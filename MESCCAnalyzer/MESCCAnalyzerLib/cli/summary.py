"""The lines `mescc metrics` and `mescc analyze` print about a result: the grade, one line
per lesion, the flagged levels and the notes."""

from __future__ import annotations


def _lesion_line(lesion: dict) -> str:
    where = ", ".join(lesion.get("levels") or []) or "unnamed level"
    gap = lesion.get("mass_cord_min_distance_mm")
    gap_text = (
        ""
        if gap is None
        else f", gap to cord {gap:.1f} mm"
        + (" (under 3 mm)" if lesion.get("gap_cord_under_3mm") else "")
    )
    suv = f", SUVmax {lesion['suv_max']:.2f}" if lesion.get("suv_max") is not None else ""
    return (
        f"lesion {lesion['id']} at {where}: grade {lesion['bilsky_grade']}, "
        f"MSCC {lesion['mscc_percent']:.1f} %, MCC {lesion['mcc_percent']:.1f} %, "
        f"cord CSA ratio {lesion['cord_csa_ratio']:.2f}, canal compromise "
        f"{lesion['canal_compromise_percent']:.1f} %, mass {lesion['mass_volume_ml']:.2f} ml"
        f"{gap_text}{suv}"
    )


def metrics_lines(m: dict, *, notes: bool = True) -> list[str]:
    """The summary of ``metrics.json``'s content ``m`` (and its notes, unless ``notes`` is
    false: the analysis prints them with its own)."""
    lesions = m.get("lesions") or []
    lines = [f"Bilsky grade {m['bilsky_grade']}: {m['bilsky_reason']}"]
    if not lesions:
        lines[0] = f"No lesion: {m['bilsky_reason']}"
    lines += [f"  {_lesion_line(lesion)}" for lesion in lesions]
    rows = m.get("levels") or []
    if rows:
        named = "" if m.get("levels_named") else " (numbered from the top: unnamed)"
        flagged = [r for r in rows if r["flagged"]]
        lines.append(
            f"  levels {rows[0]['level']} to {rows[-1]['level']}{named}; narrowed: "
            + (", ".join(r["level"] for r in flagged) if flagged else "none")
        )
    if notes:
        lines += [f"  note: {note}" for note in m.get("notes", [])]
    return lines
