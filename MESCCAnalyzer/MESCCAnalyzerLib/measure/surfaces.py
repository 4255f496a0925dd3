"""Closed, smoothed surface models from labelmaps, their measurements and distance maps.

A binary mask (a SimpleITK image, any spacing and direction) becomes a closed triangle mesh in
LPS millimetres the way 3D Slicer's default closed-surface conversion makes it: discrete
flying edges on the mask (padded so the surface closes at the image border), then 20
iterations of windowed-sinc smoothing with pass band 0.01 (Slicer's smoothing factor 0.5).
Windowed-sinc smoothing removes the voxel staircase without the shrinkage of Laplacian
smoothing, so the enclosed volume stays that of the voxelised shape.

Models are written as VTK XML PolyData (``.vtp``) in LPS with the field-data string array
``SPACE = "LPS"``, exactly as Slicer's model storage node writes them, so Slicer converts them
to RAS when it loads them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from ..outputs import atomic_path

SMOOTHING_ITERATIONS = 20
SMOOTHING_PASS_BAND = 0.01  # Slicer: 10 ** (-4 * smoothing_factor) with smoothing_factor 0.5

_SMP_READY = False


def enable_threads() -> None:
    """Let vtk's SMP filters use all cores (its default backend runs them sequentially)."""
    global _SMP_READY
    if not _SMP_READY:
        vtk.vtkSMPTools.SetBackend("STDThread")
        _SMP_READY = True


def _vtk_image(mask_kji: np.ndarray, spacing) -> vtk.vtkImageData:
    """A vtkImageData at the origin with ``spacing`` (the direction is applied afterwards)."""
    nz, ny, nx = mask_kji.shape
    img = vtk.vtkImageData()
    img.SetDimensions(nx, ny, nz)
    img.SetSpacing(*spacing)
    img.SetOrigin(0.0, 0.0, 0.0)
    scalars = numpy_support.numpy_to_vtk(
        np.ascontiguousarray(mask_kji, dtype=np.uint8).ravel(), deep=1
    )
    img.GetPointData().SetScalars(scalars)
    return img


def mask_surface(
    mask: sitk.Image,
    *,
    smoothing_iterations: int = SMOOTHING_ITERATIONS,
    pass_band: float = SMOOTHING_PASS_BAND,
) -> vtk.vtkPolyData:
    """Closed, smoothed triangle surface (LPS mm) of the non-zero voxels of ``mask``.

    Returns an empty vtkPolyData when the mask is empty. Triangles are oriented with normals
    pointing outwards (also for left-handed direction matrices), so
    :func:`surface_volume_mm3` is positive.
    """
    enable_threads()
    arr = sitk.GetArrayViewFromImage(mask) != 0
    if not arr.any():
        return vtk.vtkPolyData()
    # Crop to the mask's bounding box with one empty voxel around, so the surface closes.
    nz = np.nonzero(arr.any(axis=(1, 2)))[0]
    ny = np.nonzero(arr.any(axis=(0, 2)))[0]
    nx = np.nonzero(arr.any(axis=(0, 1)))[0]
    lo = np.array([nx[0], ny[0], nz[0]]) - 1
    hi = np.array([nx[-1], ny[-1], nz[-1]]) + 2
    sub = np.zeros((hi[2] - lo[2], hi[1] - lo[1], hi[0] - lo[0]), dtype=np.uint8)
    src_lo = np.maximum(lo, 0)
    src_hi = np.minimum(hi, np.array(arr.shape[::-1]))
    dst = src_lo - lo
    sub[
        dst[2] : dst[2] + src_hi[2] - src_lo[2],
        dst[1] : dst[1] + src_hi[1] - src_lo[1],
        dst[0] : dst[0] + src_hi[0] - src_lo[0],
    ] = arr[src_lo[2] : src_hi[2], src_lo[1] : src_hi[1], src_lo[0] : src_hi[0]]

    spacing = np.asarray(mask.GetSpacing(), dtype=np.float64)
    img = _vtk_image(sub, spacing)
    fe = vtk.vtkDiscreteFlyingEdges3D()
    fe.SetInputData(img)
    fe.SetValue(0, 1)
    fe.ComputeNormalsOff()
    fe.ComputeGradientsOff()
    fe.ComputeScalarsOff()
    last = fe
    if smoothing_iterations > 0:
        ws = vtk.vtkWindowedSincPolyDataFilter()
        ws.SetInputConnection(fe.GetOutputPort())
        ws.SetNumberOfIterations(smoothing_iterations)
        ws.SetPassBand(pass_band)
        ws.BoundarySmoothingOff()
        ws.FeatureEdgeSmoothingOff()
        ws.NonManifoldSmoothingOn()
        ws.NormalizeCoordinatesOn()
        last = ws
    tri = vtk.vtkTriangleFilter()
    tri.SetInputConnection(last.GetOutputPort())
    tri.Update()
    poly = vtk.vtkPolyData()
    poly.DeepCopy(tri.GetOutput())

    # Scaled-index space -> LPS: p = origin + D (lo * spacing + q); D is a rotation (or reflection).
    direction = np.asarray(mask.GetDirection(), dtype=np.float64).reshape(3, 3)
    origin = np.asarray(mask.GetOrigin(), dtype=np.float64) + direction @ (lo * spacing)
    pts = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    pts = origin + pts @ direction.T
    poly.GetPoints().SetData(numpy_support.numpy_to_vtk(pts, deep=1))
    if np.linalg.det(direction) < 0:
        rev = vtk.vtkReverseSense()
        rev.SetInputData(poly)
        rev.ReverseCellsOn()
        rev.ReverseNormalsOff()
        rev.Update()
        poly = vtk.vtkPolyData()
        poly.DeepCopy(rev.GetOutput())
    _orient_outwards(poly)
    return poly


def _signed_volume(poly: vtk.vtkPolyData) -> float:
    """Signed enclosed volume (divergence theorem); positive for outward-facing triangles."""
    if poly.GetNumberOfCells() == 0:
        return 0.0
    pts = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    tri = _triangles(poly)
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def _triangles(poly: vtk.vtkPolyData) -> np.ndarray:
    polys = poly.GetPolys()
    conn = numpy_support.vtk_to_numpy(polys.GetConnectivityArray())
    return conn.reshape(-1, 3).astype(np.int64)


def _orient_outwards(poly: vtk.vtkPolyData) -> None:
    if _signed_volume(poly) < 0:
        rev = vtk.vtkReverseSense()
        rev.SetInputData(poly)
        rev.ReverseCellsOn()
        rev.Update()
        poly.DeepCopy(rev.GetOutput())


def surface_volume_mm3(poly: vtk.vtkPolyData) -> float:
    """Volume (mm3) enclosed by a closed surface."""
    return abs(_signed_volume(poly))


def surface_area_mm2(poly: vtk.vtkPolyData) -> float:
    """Total triangle area (mm2)."""
    if poly.GetNumberOfCells() == 0:
        return 0.0
    return float(triangle_areas_mm2(poly).sum())


def triangle_areas_mm2(poly: vtk.vtkPolyData) -> np.ndarray:
    """Area (mm2) of each triangle."""
    pts = numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)
    tri = _triangles(poly)
    a, b, c = pts[tri[:, 0]], pts[tri[:, 1]], pts[tri[:, 2]]
    return 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)


def points_lps(poly: vtk.vtkPolyData) -> np.ndarray:
    """The surface's points (N x 3, LPS mm)."""
    if poly.GetNumberOfPoints() == 0:
        return np.zeros((0, 3))
    return numpy_support.vtk_to_numpy(poly.GetPoints().GetData()).astype(np.float64)


def distance_to_surface(points: np.ndarray, surface: vtk.vtkPolyData) -> np.ndarray:
    """Signed distance (mm) of ``points`` to a closed ``surface``: negative inside it."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if surface.GetNumberOfCells() == 0 or len(points) == 0:
        return np.full(len(points), np.inf)
    implicit = vtk.vtkImplicitPolyDataDistance()
    implicit.SetInput(surface)
    out = vtk.vtkDoubleArray()
    implicit.FunctionValue(numpy_support.numpy_to_vtk(points, deep=1), out)
    return numpy_support.vtk_to_numpy(out).astype(np.float64).copy()


def add_point_array(
    poly: vtk.vtkPolyData, name: str, values: np.ndarray, *, active: bool = True
) -> None:
    """Attach a float point array (one value per point); make it the active scalars if asked."""
    arr = numpy_support.numpy_to_vtk(np.ascontiguousarray(values, dtype=np.float32), deep=1)
    arr.SetName(name)
    poly.GetPointData().AddArray(arr)
    if active:
        poly.GetPointData().SetActiveScalars(name)


@dataclass
class SurfaceDistances:
    """Distances between two closed surfaces A and B (mm; 0 where they touch or overlap)."""

    a_to_b_mm: np.ndarray  # per point of A
    b_to_a_mm: np.ndarray  # per point of B
    min_mm: float


def surface_distances(a: vtk.vtkPolyData, b: vtk.vtkPolyData) -> SurfaceDistances:
    """Point-to-surface distances both ways, clamped at 0 (overlap after smoothing = touching)."""
    da = np.clip(distance_to_surface(points_lps(a), b), 0.0, None)
    db = np.clip(distance_to_surface(points_lps(b), a), 0.0, None)
    mins = [float(x.min()) for x in (da, db) if len(x)]
    return SurfaceDistances(da, db, min(mins) if mins else float("inf"))


def _trilinear(
    arr_kji: np.ndarray, image: sitk.Image, points: np.ndarray, outside: float
) -> np.ndarray:
    """Trilinear samples of an array on ``image``'s grid at LPS points (``outside`` beyond it)."""
    m = (
        np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
        * np.asarray(image.GetSpacing())[None, :]
    )
    idx = (np.asarray(points, dtype=np.float64) - np.asarray(image.GetOrigin())) @ np.linalg.inv(
        m
    ).T
    size = np.asarray(image.GetSize())
    i0 = np.floor(idx).astype(np.int64)
    f = idx - i0
    out = np.zeros(len(idx))
    ok_all = np.all((idx >= 0) & (idx <= size - 1), axis=1)
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (
                    (f[:, 0] if dx else 1 - f[:, 0])
                    * (f[:, 1] if dy else 1 - f[:, 1])
                    * (f[:, 2] if dz else 1 - f[:, 2])
                )
                x = np.clip(i0[:, 0] + dx, 0, size[0] - 1)
                y = np.clip(i0[:, 1] + dy, 0, size[1] - 1)
                z = np.clip(i0[:, 2] + dz, 0, size[2] - 1)
                out += w * arr_kji[z, y, x]
    out[~ok_all] = outside
    return out


def distances_to_mask_surface(
    points: np.ndarray,
    mask: sitk.Image,
    surface: vtk.vtkPolyData,
    *,
    exact_within_mm: float = 4.0,
    map_within_mm: float = 12.0,
) -> np.ndarray:
    """Distance (mm, >= 0) of ``points`` to ``surface``, the smoothed surface of ``mask``.

    Exact point-to-surface distances cost ~0.1 ms a point, so they are kept for the points
    that decide contact and gaps: those nearer than ``exact_within_mm`` and the 200 nearest. Points up to
    ``map_within_mm`` away read a Euclidean distance map of the mask (computed only in the
    region where both the points and the mask are; within about half a voxel), and farther
    points take the distance to the nearest of 500 surface vertices (within a millimetre or
    so at such distances, beyond the colour map's range anyway).
    """
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0 or surface.GetNumberOfCells() == 0:
        return np.full(len(points), np.inf)
    spacing = np.asarray(mask.GetSpacing(), dtype=np.float64)
    size = np.asarray(mask.GetSize())
    arr = sitk.GetArrayViewFromImage(mask) != 0
    ks, js, is_ = (np.nonzero(arr.any(axis=ax))[0] for ax in ((1, 2), (0, 2), (0, 1)))
    pad = np.ceil(map_within_mm / spacing).astype(int) + 1
    # The map is needed where the points are, and is exact there up to map_within_mm when
    # the box also holds every mask voxel that near: (points' box + pad) within (mask's box + pad).
    m = np.asarray(mask.GetDirection(), dtype=np.float64).reshape(3, 3) * spacing[None, :]
    idx = (points - np.asarray(mask.GetOrigin())) @ np.linalg.inv(m).T
    lo = np.maximum(
        np.maximum(np.floor(idx.min(axis=0)).astype(int), np.array([is_[0], js[0], ks[0]])) - pad, 0
    )
    hi = np.minimum(
        np.minimum(np.ceil(idx.max(axis=0)).astype(int), np.array([is_[-1], js[-1], ks[-1]]))
        + pad
        + 1,
        size,
    )
    approx = np.full(len(points), np.inf)
    if np.all(hi - lo >= 2):
        sub = mask[int(lo[0]) : int(hi[0]), int(lo[1]) : int(hi[1]), int(lo[2]) : int(hi[2])] != 0
        if sitk.GetArrayViewFromImage(sub).any():
            dmap = sitk.SignedMaurerDistanceMap(
                sub, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
            )
            # The map runs to the mask's voxel centres; the surface lies half a voxel nearer.
            approx = (
                _trilinear(sitk.GetArrayFromImage(dmap), sub, points, outside=np.inf)
                - 0.5 * spacing.min()
            )
    far = ~(approx < map_within_mm)
    if far.any():
        verts = points_lps(surface)
        verts = verts[:: max(1, len(verts) // 500)]
        q = points[far]
        # |q - v|^2 = |q|^2 + |v|^2 - 2 q.v, one matrix product instead of a 3D difference array
        d2 = (q**2).sum(1)[:, None] + (verts**2).sum(1)[None, :] - 2.0 * q @ verts.T
        best = np.sqrt(np.clip(d2.min(axis=1), 0.0, None))
        approx[far] = best
    out = np.clip(approx, 0.0, None)
    near = approx < exact_within_mm
    near[np.argsort(approx)[:200]] = True  # the smallest distance is always measured exactly
    if near.any():
        out[near] = np.clip(distance_to_surface(points[near], surface), 0.0, None)
    return out


def area_within_mm2(poly: vtk.vtkPolyData, point_values: np.ndarray, threshold: float) -> float:
    """Area (mm2) of the triangles whose mean point value is at most ``threshold``."""
    if poly.GetNumberOfCells() == 0:
        return 0.0
    tri = _triangles(poly)
    mean = np.asarray(point_values)[tri].mean(axis=1)
    return float(triangle_areas_mm2(poly)[mean <= threshold].sum())


def polyline(points: np.ndarray) -> vtk.vtkPolyData:
    """A single polyline through ``points`` (N x 3, LPS mm)."""
    points = np.asarray(points, dtype=np.float64)
    poly = vtk.vtkPolyData()
    vpts = vtk.vtkPoints()
    vpts.SetData(numpy_support.numpy_to_vtk(points, deep=1))
    poly.SetPoints(vpts)
    line = vtk.vtkPolyLine()
    line.GetPointIds().SetNumberOfIds(len(points))
    for i in range(len(points)):
        line.GetPointIds().SetId(i, i)
    cells = vtk.vtkCellArray()
    cells.InsertNextCell(line)
    poly.SetLines(cells)
    return poly


def lps_to_ras_polydata(poly: vtk.vtkPolyData) -> vtk.vtkPolyData:
    """A copy of ``poly`` with points flipped from LPS to RAS (x, y negated)."""
    out = vtk.vtkPolyData()
    out.DeepCopy(poly)
    if out.GetNumberOfPoints():
        pts = points_lps(out) * np.array([-1.0, -1.0, 1.0])
        out.GetPoints().SetData(numpy_support.numpy_to_vtk(pts, deep=1))
    return out


def write_model(poly: vtk.vtkPolyData, path: str | os.PathLike) -> None:
    """Write ``poly`` (LPS) to a ``.vtp`` file as Slicer writes models: ``SPACE = LPS`` field data."""
    out = vtk.vtkPolyData()
    out.ShallowCopy(poly)
    fd = vtk.vtkFieldData()
    for i in range(poly.GetFieldData().GetNumberOfArrays()):
        arr = poly.GetFieldData().GetAbstractArray(i)
        if arr is not None and arr.GetName() != "SPACE":
            fd.AddArray(arr)
    space = vtk.vtkStringArray()
    space.SetName("SPACE")
    space.InsertNextValue("LPS")
    fd.AddArray(space)
    out.SetFieldData(fd)
    # Serialised in memory and written by Python: VTK's own file writing crashes or reports
    # success when the disk fills (vtk 9.6), Python raises the operating system's error.
    writer = vtk.vtkXMLPolyDataWriter()
    writer.SetWriteToOutputString(True)
    writer.SetInputData(out)
    writer.SetDataModeToBinary()
    writer.SetCompressorTypeToZLib()
    if not writer.Write():
        raise RuntimeError(f"the model could not be serialised for {path}")
    data = writer.GetOutputString()  # binary mode: base64 inside the XML, plain ASCII
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            handle.write(data.encode("ascii"))


def read_model(path: str | os.PathLike) -> vtk.vtkPolyData:
    """Read a ``.vtp`` model; returns LPS points (converts from RAS when the file says RAS)."""
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(path))
    reader.Update()
    poly = vtk.vtkPolyData()
    poly.DeepCopy(reader.GetOutput())
    space = poly.GetFieldData().GetAbstractArray("SPACE")
    if space is not None and space.GetValue(0).upper() == "RAS":
        poly = lps_to_ras_polydata(poly)  # the same flip both ways
    return poly
