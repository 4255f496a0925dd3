"""Reading and writing 3D Slicer point lists (``.mrk.json``) in LPS.

A Slicer markups file holds one or more point lists (``"markups": [...]``), each with a
``coordinateSystem`` ("LPS", the default since Slicer 4.11, or "RAS" in older files) and
``controlPoints`` with a ``label``, an optional ``description`` and a ``position`` in mm.
Every position returned here is LPS, the convention of ITK/SimpleITK and of NIfTI/NRRD files
as SimpleITK reads them; a RAS file is converted by negating x and y.

Reference: Slicer's ``vtkMRMLMarkupsJsonStorageNode`` and the markups JSON schema
(``Modules/Loadable/Markups/Resources/Schema/markups-schema-v1.0.3.json``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError
from ..outputs import write_json
from .dicom_series import is_regular_file

MARKUPS_SCHEMA = (
    "https://raw.githubusercontent.com/slicer/slicer/master/Modules/Loadable/Markups/"
    "Resources/Schema/markups-schema-v1.0.3.json#"
)

# Slicer's positionStatus values; only these two carry a usable position.
_USABLE_STATUS = {"defined", "preview"}


@dataclass
class ControlPoint:
    """One control point: ``label`` (shown in Slicer), ``description``, position in LPS mm."""

    label: str
    description: str
    xyz_lps: np.ndarray
    defined: bool = True

    @property
    def text(self) -> str:
        """The description when there is one, else the label."""
        return self.description if self.description else self.label


@dataclass
class PointList:
    """One markups node of a file: its ``name`` (may be empty), ``type`` and control points."""

    name: str
    type: str
    points: list[ControlPoint] = field(default_factory=list)

    def defined_points(self) -> list[ControlPoint]:
        """The points whose position is set (Slicer's positionStatus defined/preview)."""
        return [p for p in self.points if p.defined]


def _ras_lps_flip(xyz) -> np.ndarray:
    """RAS <-> LPS for a point: negate the first two coordinates (the map is its own inverse)."""
    out = np.array(xyz, dtype=float)
    out[..., :2] *= -1.0
    return out


def read_markups(path: str | os.PathLike) -> list[PointList]:
    """Read every point list of a Slicer ``.mrk.json`` file, positions in LPS.

    Raises :class:`InputError` naming the file when it is not JSON, has no ``markups``
    array, declares an unknown coordinate system or has a malformed position.
    """
    markups = _markups_array(_read_json(path), path)
    return [_point_list(markup, m_index, path) for m_index, markup in enumerate(markups)]


def _read_json(path: str | os.PathLike):
    """The parsed JSON of ``path``; :class:`InputError` when it cannot be read or parsed."""
    if os.path.exists(path) and not is_regular_file(path):
        raise InputError(
            "not a regular file (a named pipe, socket or device)",
            path=path,
            hint="expected a Slicer .mrk.json point list",
        )
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise InputError("file not found", path=path) from exc
    except RecursionError:
        raise InputError("the JSON is nested too deeply", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the file ({exc})", path=path) from exc
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not a JSON file ({exc.msg} at line {exc.lineno})",
            path=path,
            hint="expected a Slicer .mrk.json point list",
        ) from exc


def _markups_array(data, path: str | os.PathLike) -> list:
    """The non-empty ``markups`` array of a parsed markups file."""
    markups = data.get("markups") if isinstance(data, dict) else None
    if not isinstance(markups, list) or not markups:
        raise InputError(
            "no 'markups' array in the file",
            path=path,
            hint="expected a Slicer .mrk.json point list",
        )
    return markups


def _point_list(markup, m_index: int, path: str | os.PathLike) -> PointList:
    """One markups node (``markup``, the ``m_index``-th of the file) as a :class:`PointList`."""
    if not isinstance(markup, dict):
        raise InputError(f"markup {m_index + 1} is not an object", path=path)
    system = _coordinate_system(markup, m_index, path)
    plist = PointList(
        name=str(markup.get("name", "") or ""), type=str(markup.get("type", "") or "")
    )
    control_points = markup.get("controlPoints") or []
    if not isinstance(control_points, list):
        raise InputError(f"'controlPoints' of markup {m_index + 1} is not a list", path=path)
    for p_index, cp in enumerate(control_points):
        plist.points.append(_control_point(cp, system, p_index, m_index, path))
    return plist


def _coordinate_system(markup: dict, m_index: int, path: str | os.PathLike) -> str:
    """The markup's coordinate system ("LPS" or "RAS"), after checking its units are mm."""
    system = str(markup.get("coordinateSystem", "LPS") or "LPS").upper()
    if system not in ("LPS", "RAS"):
        raise InputError(
            f"unknown coordinateSystem '{system}' in markup {m_index + 1}",
            path=path,
            hint="Slicer writes LPS or RAS",
        )
    units = markup.get("coordinateUnits", "mm")
    if isinstance(units, dict):
        units = units.get("CodeValue", "mm")
    if units not in ("mm", None, ""):
        raise InputError(
            f"coordinates in '{units}', only mm are supported (markup {m_index + 1})", path=path
        )
    return system


def _control_point(
    cp, system: str, p_index: int, m_index: int, path: str | os.PathLike
) -> ControlPoint:
    """One control point, its position converted from ``system`` to LPS (NaN if unset)."""
    if not isinstance(cp, dict):
        raise InputError(
            f"control point {p_index + 1} of markup {m_index + 1} is not an object",
            path=path,
        )
    status = str(cp.get("positionStatus", "defined"))
    defined = status in _USABLE_STATUS
    if defined:
        position = cp.get("position")
        try:
            xyz = np.asarray(position, dtype=float)
        except (TypeError, ValueError):
            xyz = np.zeros(0)
        if xyz.shape != (3,) or not np.all(np.isfinite(xyz)):
            raise InputError(
                f"control point {p_index + 1} of markup {m_index + 1} has no valid 3D position ({position!r})",
                path=path,
            )
        if system == "RAS":
            xyz = _ras_lps_flip(xyz)
    else:
        xyz = np.full(3, np.nan)
    return ControlPoint(
        label=str(cp.get("label", "") or ""),
        description=str(cp.get("description", "") or ""),
        xyz_lps=xyz,
        defined=defined,
    )


def read_markups_points(path: str | os.PathLike) -> list[tuple[str, np.ndarray]]:
    """All defined points of all lists of a ``.mrk.json`` file as ``(text, xyz_lps)``.

    ``text`` is the point's description when it has one, else its label (so a file whose
    points carry e.g. a tissue name in the description gives that name). ``xyz_lps`` is a
    float array of shape (3,), mm, LPS whatever the file's coordinate system.
    """
    return [(p.text, p.xyz_lps) for plist in read_markups(path) for p in plist.defined_points()]


def read_landmark_pairs(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Paired landmarks for a registration initialisation: ``(fixed_lps, moving_lps)``, (N, 3).

    Two layouts are accepted:

    * a file with two point lists: the first (or the one named ``fixed``/``mri``) holds the
      points on the fixed (MRI) image, the second (``moving``/``ct``) the same anatomical
      points on the moving (CT) image, paired by order;
    * a file with one point list whose labels (or descriptions) start with ``fixed``/``F``
      and ``moving``/``M`` followed by a shared name, e.g. ``F-1`` and ``M-1``, ``fixed T8``
      and ``moving T8``: points are paired by that name.

    At least three non-collinear pairs are needed for a rigid initialisation.
    """
    lists = read_markups(path)
    if len(lists) >= 2:
        fixed_list, moving_list = lists[0], lists[1]
        names = [pl.name.lower() for pl in lists[:2]]
        if names[0] in ("moving", "ct") or names[1] in ("fixed", "mri"):
            fixed_list, moving_list = moving_list, fixed_list
        if len(fixed_list.points) != len(moving_list.points):
            raise InputError(
                f"the two point lists have {len(fixed_list.points)} and {len(moving_list.points)} points",
                path=path,
                hint="place the same anatomical points, in the same order, on both images",
            )
        pairs = [
            (f.xyz_lps, m.xyz_lps)
            for f, m in zip(fixed_list.points, moving_list.points, strict=True)
            if f.defined and m.defined
        ]
    else:
        fixed, moving = {}, {}
        for p in lists[0].defined_points():
            key_text = p.label or p.description
            role, name = _split_role(key_text)
            if role is None:
                raise InputError(
                    f"cannot tell whether point '{key_text}' is on the fixed or the moving image",
                    path=path,
                    hint="label points F-<name> (fixed, MRI) and M-<name> (moving, CT), or use two point lists",
                )
            target = fixed if role == "fixed" else moving
            if name in target:
                raise InputError(f"two '{role}' points named '{name}'", path=path)
            target[name] = p.xyz_lps
        common = [n for n in fixed if n in moving]
        pairs = [(fixed[n], moving[n]) for n in common]
    if len(pairs) < 3:
        raise InputError(
            f"{len(pairs)} landmark pair(s) found, at least 3 are needed",
            path=path,
            hint="place 3 or more matching points on both images",
        )
    fixed_lps = np.array([p[0] for p in pairs], dtype=float)
    moving_lps = np.array([p[1] for p in pairs], dtype=float)
    for pts, which in ((fixed_lps, "fixed"), (moving_lps, "moving")):
        centred = pts - pts.mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False)
        if sv[1] < 1.0:  # second singular value: spread (mm) across the best-fit line
            raise InputError(
                f"the {which} landmarks are (nearly) on one line",
                path=path,
                hint="spread the points out in 3D",
            )
    return fixed_lps, moving_lps


def _split_role(text: str) -> tuple[str | None, str]:
    t = text.strip()
    low = t.lower()
    for prefix, role in (
        ("fixed", "fixed"),
        ("moving", "moving"),
        ("mri", "fixed"),
        ("ct", "moving"),
        ("f", "fixed"),
        ("m", "moving"),
    ):
        if low.startswith(prefix):
            rest = t[len(prefix) :]
            if prefix in ("f", "m") and rest and rest[0].isalpha():
                continue
            return role, rest.strip(" -_:.")
    return None, t


def write_markups_points(
    path: str | os.PathLike,
    points: list[tuple[str, np.ndarray]] | list[list[tuple[str, np.ndarray]]],
    *,
    names: list[str] | None = None,
    coordinate_system: str = "LPS",
    descriptions: bool = False,
) -> os.PathLike:
    """Write point lists as a Slicer ``.mrk.json`` (atomically).

    ``points`` is one list of ``(text, xyz_lps)`` or a list of such lists (one markups node
    each, named by ``names``). ``text`` goes in the label, or in the description when
    ``descriptions`` is true. Positions are written in ``coordinate_system`` ("LPS" or "RAS").
    """
    system = coordinate_system.upper()
    if system not in ("LPS", "RAS"):
        raise ValueError(f"coordinate_system must be LPS or RAS, not {coordinate_system!r}")
    groups = points if points and isinstance(points[0], list) else [points]
    markups = []
    for g_index, group in enumerate(groups):
        cps = []
        for i, (text, xyz) in enumerate(group):
            pos = np.asarray(xyz, dtype=float)
            if system == "RAS":
                pos = _ras_lps_flip(pos)
            cps.append(
                {
                    "id": str(i + 1),
                    "label": f"P-{i + 1}" if descriptions else text,
                    "description": text if descriptions else "",
                    "associatedNodeID": "",
                    "position": [float(v) for v in pos],
                    "orientation": [-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0],
                    "selected": True,
                    "locked": False,
                    "visibility": True,
                    "positionStatus": "defined",
                }
            )
        entry = {
            "type": "Fiducial",
            "coordinateSystem": system,
            "coordinateUnits": "mm",
            "locked": False,
            "labelFormat": "%N-%d",
            "controlPoints": cps,
        }
        if names is not None:
            entry = {"name": names[g_index], **entry}
        markups.append(entry)
    return write_json(path, {"@schema": MARKUPS_SCHEMA, "markups": markups})
