"""The self-contained HTML report of an analysis.

Figures are rendered offscreen and embedded as base64 PNG: a sagittal and an axial view
through the worst section (MRI, segmentation outlines, PET overlay), the cord's cross-section
profile along its centreline, and a 3D rendering of the surface models coloured by the
mass-to-cord distance. matplotlib draws the 2D figures (a dependency of the package; inside
Slicer the module installs it on first use), vtk renders the 3D view (EGL/OSMesa offscreen;
where no offscreen OpenGL exists the report says so instead of failing). The metrics table
reads its names, units and definitions from :mod:`MESCCAnalyzerLib.measure.definitions`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk
from vtk.util import numpy_support

from . import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS, __version__
from .measure.definitions import report_metrics
from .measure.lesions import lesion_colour
from .outputs import write_text
from .presentation import NO_LESION_TEXT, lesion_blocks, level_rows, levels_note

LABEL_COLOURS = {
    LABEL_CORD: (1.0, 0.85, 0.2),
    LABEL_CSF: (0.3, 0.6, 1.0),
    LABEL_MASS: (0.9, 0.1, 0.1),
    LABEL_BONE: (0.95, 0.9, 0.75),
}
LABEL_TITLES = {
    LABEL_CORD: "spinal cord",
    LABEL_CSF: "CSF",
    LABEL_MASS: "epidural mass",
    LABEL_BONE: "vertebrae",
}

# key -> (name, unit, definition) for the metrics table, from the one table of definitions
# (formulas and sources: docs/methods.md, generated from it).
METRIC_ROWS = [(m.key, m.name, m.unit, m.summary) for m in report_metrics()]


@dataclass
class ReportInputs:
    """Everything the report shows; images are SimpleITK (LPS), models vtkPolyData (LPS)."""

    metrics: dict
    sections: dict[str, np.ndarray]  # column name -> values (Sections.columns())
    mri: sitk.Image
    labels: sitk.Image
    pet_on_mri: sitk.Image | None = None
    models: dict[str, vtk.vtkPolyData] = field(default_factory=dict)
    identifiers: dict = field(default_factory=dict)
    registration: dict | None = None
    adc_on_mri: sitk.Image | None = None  # ADC (1e-6 mm2/s) on the MRI grid, NaN: none
    notes: list[str] = field(default_factory=list)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _canonical(image: sitk.Image, interpolator=sitk.sitkLinear) -> sitk.Image:
    """The image with its axes permuted/flipped to the nearest LPS order (no resampling)."""
    del interpolator
    return sitk.DICOMOrient(image, "LPS")


def _slices_through(image: sitk.Image, point_lps) -> tuple[int, int, int]:
    idx = image.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in point_lps))
    size = image.GetSize()
    return tuple(int(np.clip(round(i), 0, n - 1)) for i, n in zip(idx, size, strict=True))


def slice_views_png(inputs: ReportInputs) -> str:
    """Sagittal and axial views through the worst section, as one base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mri = _canonical(inputs.mri)
    labels = _canonical(inputs.labels)
    pet = _canonical(inputs.pet_on_mri) if inputs.pet_on_mri is not None else None
    worst = inputs.metrics.get("worst_section_lps_mm")
    if worst is None:
        worst = mri.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in mri.GetSize()])
    i, _j, k = _slices_through(mri, worst)
    a_mri = sitk.GetArrayViewFromImage(mri)
    a_lab = sitk.GetArrayViewFromImage(labels)
    a_pet = sitk.GetArrayViewFromImage(pet) if pet is not None else None
    sx, sy, sz = mri.GetSpacing()
    lo, hi = np.percentile(a_mri, [1, 99.5])
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    views = [
        (
            "Sagittal (anterior left, superior up)",
            a_mri[:, :, i],
            a_lab[:, :, i],
            None if a_pet is None else a_pet[:, :, i],
            sz / sy,
            True,
        ),
        (
            "Axial (anterior up, patient left on the right)",
            a_mri[k],
            a_lab[k],
            None if a_pet is None else a_pet[k],
            sy / sx,
            False,
        ),
    ]
    for ax, (title, img, lab, pt, aspect, flip) in zip(axes, views, strict=True):
        origin = "lower" if flip else "upper"
        ax.imshow(
            img,
            cmap="gray",
            vmin=lo,
            vmax=hi,
            aspect=aspect,
            origin=origin,
            interpolation="bilinear",
        )
        if pt is not None:
            shown = np.ma.masked_less(pt, 1.5)  # SUV below 1.5 (background) left transparent
            ax.imshow(
                shown,
                cmap="hot",
                alpha=0.45,
                vmin=0,
                vmax=max(float(np.max(pt)), 2.0),
                aspect=aspect,
                origin=origin,
            )
        for value, colour in LABEL_COLOURS.items():
            mask = (lab == value).astype(float)
            if mask.any():
                ax.contour(mask, levels=[0.5], colors=[colour], linewidths=1.2, origin=origin)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    handles = [
        matplotlib.patches.Patch(color=c, label=LABEL_TITLES[v]) for v, c in LABEL_COLOURS.items()
    ]
    if a_pet is not None:
        handles.append(matplotlib.patches.Patch(color=(1.0, 0.5, 0.0), label="PET SUV ≥ 1.5"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    return _png(fig)


ADC_DISPLAY_RANGE = (0.0, 3000.0)  # 1e-6 mm2/s: restricted tumour ~500-900, CSF ~3000


def adc_png(inputs: ReportInputs) -> str | None:
    """The ADC map through the worst section (sagittal and axial) with the segmentation's
    outlines and a colour bar, or None without a DWI."""
    if inputs.adc_on_mri is None:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    adc = _canonical(inputs.adc_on_mri)
    labels = _canonical(inputs.labels)
    worst = inputs.metrics.get("worst_section_lps_mm")
    if worst is None:
        worst = adc.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in adc.GetSize()])
    i, _j, k = _slices_through(adc, worst)
    a_adc = sitk.GetArrayViewFromImage(adc)
    a_lab = sitk.GetArrayViewFromImage(labels)
    sx, sy, sz = adc.GetSpacing()
    fig, axes = plt.subplots(1, 2, figsize=(10, 5.2))
    image = None
    for ax, (title, values, outline, aspect) in zip(
        axes,
        (
            ("ADC, sagittal", a_adc[:, :, i], a_lab[:, :, i], sz / sy),
            ("ADC, axial", a_adc[k], a_lab[k], sy / sx),
        ),
        strict=True,
    ):
        image = ax.imshow(
            np.ma.masked_invalid(values),
            cmap="viridis",
            vmin=ADC_DISPLAY_RANGE[0],
            vmax=ADC_DISPLAY_RANGE[1],
            origin="lower" if "sagittal" in title else "upper",
            aspect=aspect,
        )
        for value in (LABEL_CORD, LABEL_MASS):
            if (outline == value).any():
                ax.contour(
                    outline == value,
                    levels=[0.5],
                    colors=[LABEL_COLOURS[value]],
                    linewidths=0.8,
                    origin="lower" if "sagittal" in title else "upper",
                )
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    bar = fig.colorbar(image, ax=list(axes), shrink=0.8)
    bar.set_label("ADC (10⁻⁶ mm²/s)")
    return _png(fig)


def profile_png(inputs: ReportInputs) -> str:
    """Cord CSA and AP diameter along the centreline, each lesion's extent shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = inputs.sections
    arc = np.asarray(s["arc_mm"], dtype=float)
    fig, ax1 = plt.subplots(figsize=(10, 3.6))
    ax1.plot(arc, s["cord_csa_mm2"], color="tab:orange", label="cord CSA (mm²)")
    if "sac_csa_mm2" in s:
        ax1.plot(arc, s["sac_csa_mm2"], color="tab:blue", alpha=0.6, label="thecal sac CSA (mm²)")
    ax1.set_xlabel("arc length along the cord centreline (mm)")
    ax1.set_ylabel("area (mm²)")
    ax2 = ax1.twinx()
    ax2.plot(arc, s["cord_ap_mm"], color="tab:green", linestyle="--", label="cord AP diameter (mm)")
    ax2.set_ylabel("diameter (mm)")
    for lesion in inputs.metrics.get("lesions") or []:
        lo, hi = lesion["arc_range_mm"]
        where = ", ".join(lesion.get("levels") or [])
        ax1.axvspan(
            lo,
            hi,
            color=lesion_colour(lesion["id"]),
            alpha=0.15,
            label=f"lesion {lesion['id']}" + (f" ({where})" if where else ""),
        )
    lines = ax1.get_legend_handles_labels()[0] + ax2.get_legend_handles_labels()[0]
    labels = ax1.get_legend_handles_labels()[1] + ax2.get_legend_handles_labels()[1]
    ax1.legend(lines, labels, loc="lower left", fontsize=8)
    ax1.grid(alpha=0.3)
    return _png(fig)


def render_models_png(
    models: dict[str, vtk.vtkPolyData], focus_lps=None, *, size=(900, 600)
) -> str | None:
    """3D rendering of cord (coloured by distance to the mass), sac and mass, or None.

    Returns None when no offscreen OpenGL context can be made on this machine.
    """
    os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")
    window = vtk.vtkRenderWindow()
    window.SetOffScreenRendering(1)
    window.SetSize(*size)
    renderer = vtk.vtkRenderer()
    renderer.SetBackground(1, 1, 1)
    window.AddRenderer(renderer)
    lut = vtk.vtkLookupTable()
    lut.SetHueRange(0.0, 0.6)  # red (touching) -> blue (far)
    lut.SetTableRange(0.0, 5.0)
    lut.Build()

    def add(poly, colour, opacity=1.0, scalars=None):
        if poly is None or poly.GetNumberOfPoints() == 0:
            return
        mapper = vtk.vtkPolyDataMapper()
        mapper.SetInputData(poly)
        if scalars and poly.GetPointData().GetArray(scalars) is not None:
            mapper.SetScalarModeToUsePointFieldData()
            mapper.SelectColorArray(scalars)
            mapper.SetLookupTable(lut)
            mapper.SetScalarRange(0.0, 5.0)
            mapper.ScalarVisibilityOn()
        else:
            mapper.ScalarVisibilityOff()
        actor = vtk.vtkActor()
        actor.SetMapper(mapper)
        actor.GetProperty().SetColor(*colour)
        actor.GetProperty().SetOpacity(opacity)
        renderer.AddActor(actor)

    def add_lesions(poly):
        """The mass model, each lesion in its colour (its points' ``lesion_id``)."""
        ids = None if poly is None else poly.GetPointData().GetArray("lesion_id")
        if ids is None:
            add(poly, LABEL_COLOURS[LABEL_MASS], 0.55)
            return
        for lesion_id in np.unique(numpy_support.vtk_to_numpy(ids)):
            keep = vtk.vtkThreshold()
            keep.SetInputData(poly)
            keep.SetInputArrayToProcess(
                0, 0, 0, vtk.vtkDataObject.FIELD_ASSOCIATION_POINTS, "lesion_id"
            )
            keep.SetLowerThreshold(float(lesion_id) - 0.5)
            keep.SetUpperThreshold(float(lesion_id) + 0.5)
            surface = vtk.vtkGeometryFilter()
            surface.SetInputConnection(keep.GetOutputPort())
            surface.Update()
            add(surface.GetOutput(), lesion_colour(int(lesion_id)), 0.55)

    add(models.get("sac"), LABEL_COLOURS[LABEL_CSF], 0.25)
    add(models.get("cord"), LABEL_COLOURS[LABEL_CORD], 1.0, "DistanceToMass_mm")
    add_lesions(models.get("mass"))
    bar = vtk.vtkScalarBarActor()
    bar.SetLookupTable(lut)
    bar.SetTitle("cord to mass (mm)")
    bar.SetNumberOfLabels(6)
    bar.GetTitleTextProperty().SetColor(0, 0, 0)
    bar.GetLabelTextProperty().SetColor(0, 0, 0)
    bar.SetWidth(0.1)
    bar.SetHeight(0.6)
    bar.UnconstrainedFontSizeOn()
    bar.GetTitleTextProperty().SetFontSize(16)
    bar.GetLabelTextProperty().SetFontSize(14)
    renderer.AddViewProp(bar)  # AddActor2D, its alias, is gone from vtk 9.7
    camera = renderer.GetActiveCamera()
    renderer.ResetCamera()
    if focus_lps is not None:
        camera.SetFocalPoint(*focus_lps)
    # LPS: view from the patient's left and slightly anterior, superior up.
    fp = np.asarray(camera.GetFocalPoint())
    dist = camera.GetDistance()
    camera.SetPosition(
        *(fp + dist * np.array([0.8, -0.5, 0.15]) / np.linalg.norm([0.8, -0.5, 0.15]))
    )
    camera.SetViewUp(0, 0, 1)
    renderer.ResetCameraClippingRange()
    try:
        window.Render()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(window)
        grab.Update()
        writer = vtk.vtkPNGWriter()
        writer.WriteToMemoryOn()
        writer.SetInputConnection(grab.GetOutputPort())
        writer.Write()
        data = bytes(memoryview(writer.GetResult()))
    except Exception:  # no offscreen OpenGL on this machine
        return None
    finally:
        window.Finalize()
    return base64.b64encode(data).decode("ascii") if data else None


def _fmt(value, unit: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, float) and not np.isfinite(value):
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return html.escape(str(value))


def levels_table_html(metrics: dict) -> str:
    """The per-level table: each level crossed by the cord, its minima and its flag (the
    cells of :func:`~MESCCAnalyzerLib.presentation.level_rows`)."""
    rows = level_rows(metrics)
    if not rows:
        return ""
    body = "".join(
        f"<tr{' class=flagged' if r['is_flagged'] else ''}><td>{html.escape(r['level'])}</td>"
        f"<td class=num>{r['cord_min_csa_mm2']}</td><td class=num>{r['cord_ap_min_mm']}</td>"
        f"<td class=num>{r['canal_min_area_mm2']}</td><td>{html.escape(r['lesions'])}</td>"
        f"<td>{html.escape(r['flag_reason'])}</td></tr>"
        for r in rows
    )
    note = levels_note(metrics)
    return (
        "<h2>Levels</h2>"
        + (f"<p class=meta>{html.escape(note)}</p>" if note else "")
        + "<table id=levels><tr><th>level</th><th>cord CSA, min (mm²)</th>"
        "<th>cord AP, min (mm)</th><th>canal area, min (mm²)</th><th>lesion</th>"
        f"<th>narrowing against its neighbours</th></tr>{body}</table>"
    )


def lesions_html(metrics: dict) -> str:
    """One block per lesion in its colour (:func:`~MESCCAnalyzerLib.presentation.lesion_blocks`:
    its levels, grade with the reason, measures, gaps under 3 mm marked)."""
    if metrics.get("lesions") is None:
        return ""
    blocks = lesion_blocks(metrics)
    if not blocks:
        return f"<h2>Lesions</h2><p id=no-lesion>{html.escape(NO_LESION_TEXT)}</p>"
    parts = []
    for b in blocks:
        rows = "".join(
            f"<tr><td>{html.escape(r['label'])}</td><td class=num>{html.escape(r['value'])}</td></tr>"
            for r in b["rows"]
        )
        worst = " · grades the study" if b["id"] == metrics.get("worst_lesion_id") else ""
        parts.append(
            f"<div class=lesion id=lesion-{b['id']}>"
            f"<h3><span class=swatch style='background: {b['color']}'></span>"
            f"{html.escape(b['title'])}: Bilsky {html.escape(b['grade'])}{worst}</h3>"
            f"<div class=reason>{html.escape(b['reason'])}</div><table>{rows}</table></div>"
        )
    return "<h2>Lesions</h2>" + "".join(parts)


def build_report_html(inputs: ReportInputs) -> str:
    """The report as one self-contained HTML document."""
    m = inputs.metrics
    views = slice_views_png(inputs)
    profile = profile_png(inputs)
    render = render_models_png(inputs.models, m.get("worst_section_lps_mm"))
    rows = []
    for key, label, unit, definition in METRIC_ROWS:
        if key not in m or key == "bilsky_grade":
            continue
        rows.append(
            f"<tr><td>{html.escape(label)}</td><td class=num>{_fmt(m[key], unit)}</td>"
            f"<td>{html.escape(unit)}</td><td class=def>{html.escape(definition)}</td><td><code>{key}</code></td></tr>"
        )
    ident = "".join(
        f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>"
        for k, v in inputs.identifiers.items()
        if v
    )
    reg = ""
    if inputs.registration:
        r = inputs.registration
        reg_rows = "".join(
            f"<tr><th>{html.escape(str(k).replace('_', ' '))}</th><td>{html.escape(_fmt(v, '') if not isinstance(v, (list, dict)) else str(v))}</td></tr>"
            for k, v in r.items()
        )
        reg = f"<h2>Registration quality (CT → MRI)</h2><table class=kv>{reg_rows}</table>"
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in inputs.notes)
    render_html = (
        f'<img alt="3D surface models" src="data:image/png;base64,{render}">'
        if render
        else "<p><em>3D rendering unavailable: no offscreen OpenGL on this machine.</em></p>"
    )
    worst = m.get("worst_section_lps_mm")
    worst_txt = ", ".join(f"{v:.1f}" for v in worst) if worst else "–"
    if m.get("worst_section_level"):
        worst_txt += f" (level {html.escape(str(m['worst_section_level']))})"
    levels = levels_table_html(m)
    lesions = lesions_html(m)
    adc = adc_png(inputs)
    adc_html = (
        f'<h2>Diffusion: the ADC map</h2><img alt="ADC map" src="data:image/png;base64,{adc}">'
        if adc
        else ""
    )
    grade = "none" if m.get("bilsky_grade") is None else str(m["bilsky_grade"])
    several = len(m.get("lesions") or []) > 1
    metrics_title = f"Metrics (the worst lesion, {m['worst_lesion_id']})" if several else "Metrics"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>MESCC report – Bilsky {html.escape(grade)}</title>
<style>
body {{ font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }}
h1 {{ margin-bottom: 0.2em; }} h2 {{ border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }}
.grade {{ font-size: 3.2em; font-weight: 700; color: #b00; margin: 0.1em 0; }}
.reason {{ background: #fff6e6; border-left: 4px solid #e8a33d; padding: 0.6em 1em; }}
table {{ border-collapse: collapse; }} td, th {{ padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: left; vertical-align: top; }}
td.num {{ text-align: right; font-variant-numeric: tabular-nums; font-weight: 600; }} td.def {{ color: #555; font-size: 0.9em; }}
tr.flagged td {{ background: #fde8e8; }} .swatch {{ display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.4em; border-radius: 2px; }} img {{ max-width: 100%; }} .meta {{ color: #666; font-size: 0.9em; }} code {{ font-size: 0.85em; color: #666; }}
</style></head><body>
<h1>Metastatic epidural spinal cord compression</h1>
<p class=meta>MESCC Analyzer {__version__} · generated {_dt.datetime.now().strftime("%Y-%m-%d %H:%M")} · research software, not a medical device</p>
<table class=kv>{ident}</table>
<h2>Bilsky grade</h2>
<div class=grade id=bilsky-grade>{html.escape(grade)}</div>
<div class=reason id=bilsky-reason>{html.escape(str(m.get("bilsky_reason", "")))}</div>
<p>Worst section (LPS, mm): {worst_txt}</p>
{lesions}
<h2>{metrics_title}</h2>
<table id=metrics><tr><th>measure</th><th>value</th><th>unit</th><th>definition</th><th>key</th></tr>{"".join(rows)}</table>
{levels}
<h2>Images through the worst section</h2>
<img alt="sagittal and axial views" src="data:image/png;base64,{views}">
{adc_html}
<h2>Cord along its centreline</h2>
<img alt="cross-section profile" src="data:image/png;base64,{profile}">
<h2>3D models</h2>
{render_html}
{reg}
{"<h2>Notes</h2><ul>" + notes + "</ul>" if notes else ""}
</body></html>
"""


def write_report(inputs: ReportInputs, path: str | os.PathLike) -> Path:
    """Write the HTML report atomically."""
    return write_text(path, build_report_html(inputs))
