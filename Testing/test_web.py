"""``mescc serve`` verified as a person would: the demo page, driven in headless Chromium.

The server runs as its own process on a free loopback port (killed in the fixture's
finaliser); Debian's ``chromium`` is driven over the DevTools protocol (``webdriver.py``)
with its own downloads denied. The demo goes through the five steps by clicking; what the
page shows is checked against the session's ``metrics.json``, and a screenshot of each step
against what the views must show.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import vtk
from PIL import Image
from webdriver import Browser, free_port, serve, stop, wait_until_served

from MESCCAnalyzerLib.mrml.levels import level_point_lps
from MESCCAnalyzerLib.presentation import lesion_blocks, level_rows
from MESCCAnalyzerLib.web.teaching import format_value, metric_rows

ROOT = Path(__file__).resolve().parents[1]
DOCS_IMAGES = ROOT / "docs" / "images"
# MESCC_WEB_SCREENSHOTS=1 refreshes the README screenshots (docs/images/web_*.png) from this run.
UPDATE_DOCS = os.environ.get("MESCC_WEB_SCREENSHOTS") == "1"


def _listening_addresses(port: int) -> set[str]:
    """Local IPv4 addresses with a socket listening on ``port`` (from /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text(encoding="utf-8").splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, port_hex = local.split(":")
        if int(port_hex, 16) == port and state == "0A":  # 0A: LISTEN
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


# -- the served demo, driven by clicking ----------------------------------------------------------
@pytest.fixture(scope="module")
def a_served_demo(tmp_path_factory):
    """``mescc serve --demo`` on a free loopback port; yields (the address it printed, with
    its token; port; session folder)."""
    work = tmp_path_factory.mktemp("serve")
    out = work / "session"
    port = free_port()
    process = serve(["--demo", "--port", str(port), "--out", str(out)], cwd=work)
    try:
        url = wait_until_served(process, port)
        yield url, port, out
    finally:
        stop(process)


class Page:
    """The page as a person uses it: open a step, click its buttons, look at the views."""

    def __init__(self, browser: Browser, shots: Path):
        self.b = browser
        self.shots = shots

    def open_step(self, n: int):
        active = (
            f"document.querySelector('#step-{n}').closest('.v-expansion-panel')"
            ".classList.contains('v-expansion-panel--active')"
        )
        time.sleep(0.4)  # a panel that is opening or closing answers late
        if not self.b.evaluate(active):
            self.b.click(f"#step-{n}")
        self.b.wait_for(active, timeout_s=5, what=f"step {n} to open")
        time.sleep(0.4)

    def wait_idle(self):
        self.b.wait_for(
            "getComputedStyle(document.querySelector('#busy')).display === 'none'",
            timeout_s=120,
            what="the server to finish",
        )

    def views(self) -> dict:
        """The view boxes: '3d' (the one without a slice slider) and 'slices'."""
        boxes = self.b.evaluate(
            """Array.from(document.querySelectorAll('.layout-grid-item')).map(e => {
                const r = e.getBoundingClientRect();
                return {x: r.x, y: r.y, width: r.width, height: r.height,
                        slice: e.querySelector('.v-slider') !== null};
            })"""
        )
        return {
            "3d": [b for b in boxes if not b["slice"]],
            "slices": [b for b in boxes if b["slice"]],
        }

    def screenshot(self, name: str, *, for_docs: bool = True) -> np.ndarray:
        time.sleep(1.0)  # the views stream their next frame after the scene changed
        data = self.b.screenshot(self.shots / f"web_{name}.png")
        if UPDATE_DOCS and for_docs:
            DOCS_IMAGES.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.shots / f"web_{name}.png", DOCS_IMAGES / f"web_{name}.png")
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(float)


def region(pixels: np.ndarray, box: dict) -> np.ndarray:
    """The pixels of a view box, 8 px inside its border (screenshots are at scale 1)."""
    x0, y0 = int(box["x"]) + 8, int(box["y"]) + 8
    x1, y1 = int(box["x"] + box["width"]) - 8, int(box["y"] + box["height"]) - 8
    return pixels[y0:y1, x0:x1]


def red_pixels(pixels: np.ndarray) -> int:
    """Pixels of the distance map's contact red (0.85, 0, 0): red high, green and blue low."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(np.count_nonzero((r > 140) & (g < 90) & (b < 90)))


def magenta_pixels(pixels: np.ndarray) -> int:
    """Pixels of lesion 1's magenta (0.90, 0.20, 0.70), shaded: red and blue well above green."""
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    return int(np.count_nonzero((r > 100) & (b > 0.5 * r) & (g < 0.6 * b) & (r - g > 60)))


def coloured_pixels(pixels: np.ndarray) -> int:
    """Saturated pixels (the models' colour map), as opposed to the grey background."""
    return int(np.count_nonzero(pixels.max(axis=2) - pixels.min(axis=2) > 60))


@pytest.fixture(scope="module")
def a_demo_session(a_served_demo, tmp_path_factory):
    """The five steps clicked through once; what the page showed at each step, recorded."""
    url, port, out = a_served_demo
    shots = tmp_path_factory.mktemp("screenshots")
    seen = {"port": port, "out": out, "timings_s": {}}
    start = time.monotonic()
    with Browser(width=1600, height=1000) as browser:
        page = Page(browser, shots)
        b = page.b
        b.open(url)
        b.wait_for("document.querySelector('#step-1')", timeout_s=60, what="the page")
        b.wait_for("document.querySelectorAll('.layout-grid-item img').length >= 4")
        time.sleep(1.5)  # the views refit once the page has sized them
        seen["address"] = b.evaluate("window.location.href")

        # 1. study: the demo opens loaded
        page.open_step(1)
        seen["study_text"] = b.text("#study-text")
        seen["views"] = page.views()
        seen["step1"] = page.screenshot("1_study")
        seen["timings_s"]["1 study"] = time.monotonic() - start

        # 2. registration
        page.open_step(2)
        b.click("#btn-register")
        b.wait_for("document.querySelector('#step-2 .mdi-check-circle')", timeout_s=120)
        page.wait_idle()
        page.open_step(2)
        seen["registration_text"] = b.text("#registration-text")
        seen["step2"] = page.screenshot("2_registration")
        seen["timings_s"]["2 registration"] = time.monotonic() - start

        # 3. segmentation: one brush stroke of mass in the axial view, grow, accept
        page.open_step(3)
        axial = seen["views"]["slices"][-1]  # the layout's bottom-right view
        before = page.screenshot("3_before_brush", for_docs=False)
        b.click("#seg-other")  # a background stroke: it must not move the mass
        b.wait_for("document.querySelector('#seg-other').classList.contains('v-btn--active')")
        b.click("#paint")
        b.wait_for("document.querySelector('#paint').checked", what="the brush to switch on")
        time.sleep(0.5)
        cx, cy = axial["x"] + axial["width"] * 0.15, axial["y"] + axial["height"] * 0.15
        b.drag([(cx + 4 * i, cy) for i in range(12)])
        seen["brush_changed"] = np.abs(page.screenshot("3_brush") - before).max(axis=2) > 40
        seen["brush_box"] = (int(cx) - 12, int(cy) - 12, int(cx) + 60, int(cy) + 12)
        b.click("#paint")
        b.click("#btn-grow")
        b.wait_for(
            "document.querySelector('#segmentation-text').innerText.startsWith('Preview')",
            timeout_s=120,
        )
        seen["preview_text"] = b.text("#segmentation-text")
        b.click("#btn-accept")
        b.wait_for("document.querySelector('#step-3 .mdi-check-circle')", timeout_s=60)
        page.wait_idle()
        seen["step3"] = page.screenshot("3_segmentation")
        seen["timings_s"]["3 segmentation"] = time.monotonic() - start

        # 4. metrics
        page.open_step(4)
        b.click("#btn-metrics")
        b.wait_for(
            "document.querySelector('#bilsky-grade') || document.querySelector('#error').innerText",
            timeout_s=120,
        )
        assert not b.text("#error"), b.text("#error")
        page.wait_idle()
        seen["grade_text"] = b.text("#bilsky-grade")
        seen["reason_text"] = b.text("#bilsky-reason")
        seen["table"] = b.evaluate(
            """Array.from(document.querySelectorAll('#metrics-table tr')).map(r => [
                r.id, r.querySelector('.metric-value').innerText])"""
        )
        seen["plot_width"] = b.evaluate("document.querySelector('#csa-plot').naturalWidth")
        seen["levels"] = b.evaluate(
            """Array.from(document.querySelectorAll('#levels-table tbody tr.level-row')).map(r => [
                r.id, Array.from(r.querySelectorAll('td')).map(c => c.innerText.trim()),
                r.classList.contains('flagged')])"""
        )
        seen["level_reasons"] = b.evaluate(
            """Array.from(document.querySelectorAll('#levels-table tbody tr'))
                .filter(r => r.id.startsWith('level-why-')).map(r => [r.id, r.innerText.trim()])"""
        )
        seen["lesions"] = b.evaluate(
            """Array.from(document.querySelectorAll('.lesion-block')).map(c => ({
                id: c.id, title: c.querySelector('.lesion-title').innerText,
                grade: c.querySelector('.lesion-grade').innerText,
                reason: c.querySelector('.lesion-reason').innerText,
                border: getComputedStyle(c).borderLeftColor,
                values: Array.from(c.querySelectorAll('tr')).map(r => r.innerText)}))"""
        )
        seen["step4"] = page.screenshot("4_metrics")
        seen["timings_s"]["4 metrics"] = time.monotonic() - start

        # the level table: a click on the first row without the lesion jumps the views there
        # (another vertebra than the worst section's, where the page opens)
        # the slice offsets the page's sliders hold (axial Red, coronal Green, sagittal Yellow)
        sliders = """['Red', 'Green', 'Yellow'].map(
            v => window.trame.state.state[v + '__SliderState__value'])"""
        seen["sliders_before"] = b.evaluate(sliders)
        row = b.evaluate(
            """Array.from(document.querySelectorAll('#levels-table tbody tr.level-row'))
                .findIndex(r => r.querySelectorAll('td')[4].innerText.trim() === '')"""
        )
        seen["jump_row"] = row
        b.click(f"#level-{row}")
        b.wait_for("document.querySelector('#level-text').innerText.startsWith('Views at')")
        page.wait_idle()
        seen["level_text"] = b.text("#level-text")
        time.sleep(1.0)  # the sliders follow the slice nodes' next modification
        seen["sliders_after"] = b.evaluate(sliders)
        seen["step4_level"] = page.screenshot("4_levels")
        # back to the lesion's (first) level for the teaching views below
        lesion_row = b.evaluate(
            """Array.from(document.querySelectorAll('#levels-table tbody tr.level-row'))
                .findIndex(r => r.querySelectorAll('td')[4].innerText.trim() !== '')"""
        )
        b.click(f"#level-{lesion_row}")
        page.wait_idle()
        time.sleep(1.0)

        # teaching: what each metric measures, the mass highlighted
        b.click("#teaching")
        b.wait_for("document.querySelector('.teach-show')")
        b.click("#metric-mass_volume_ml .teach-show")
        b.wait_for("document.querySelector('#metric-mass_volume_ml').style.background")
        seen["teaching_rows"] = b.evaluate(
            """Array.from(document.querySelectorAll('#metrics-table tr')).map(r => [
                r.id, r.innerText, !!r.style.background])"""
        )
        seen["teaching"] = page.screenshot("4_teaching_mass")
        b.click("#metric-mass_volume_ml .teach-show")
        b.click("#teaching")

        # 5. report: both downloads (the browser's own saving is denied; the server's copy is
        # what desktop Slicer would open)
        page.open_step(5)
        b.click("#btn-report")
        b.wait_for(
            "document.querySelector('#report-text').innerText.includes('Report')", timeout_s=60
        )
        b.click("#btn-scene")
        b.wait_for(
            "document.querySelector('#report-text').innerText.includes('Scene')", timeout_s=60
        )
        seen["step5"] = page.screenshot("5_report")
        seen["error"] = b.text("#error")
        seen["timings_s"]["5 report"] = time.monotonic() - start
    print("web demo timings (s):", {k: round(v, 1) for k, v in seen["timings_s"].items()})
    return seen


def test_the_server_listens_on_loopback_only(a_demo_session):
    assert _listening_addresses(a_demo_session["port"]) == {"127.0.0.1"}


def test_the_page_connects_with_the_token_of_its_address(a_demo_session, a_served_demo):
    # the page connected (the views streamed) with the token of the printed address; the
    # hand-over parameters left the address bar, the token stayed for a reload
    assert a_demo_session["address"] == a_served_demo[0]


def test_the_demo_opens_on_the_phantom_study(a_demo_session):
    s = a_demo_session
    assert "phantom, Bilsky grade 2" in s["study_text"]
    assert len(s["views"]["slices"]) == 3 and len(s["views"]["3d"]) == 1


def test_each_step_shows_the_mri_in_all_three_slice_views(a_demo_session):
    s = a_demo_session
    for step in ("step1", "step2", "step3", "step4", "step5"):
        for box in s["views"]["slices"]:
            # an empty (black) view has std 0; the MRI with the PET overlay is well above 10
            assert region(s[step], box).std() > 10.0, step


def test_registration_reports_its_quality(a_demo_session):
    assert "CT and PET registered to the MRI" in a_demo_session["registration_text"]
    assert "Mattes MI" in a_demo_session["registration_text"]


def test_the_brush_paints_in_the_axial_view(a_demo_session):
    s = a_demo_session
    x0, y0, x1, y1 = s["brush_box"]
    changed = s["brush_changed"]
    # the stroke (and the brush outline) changed pixels along the drag, not elsewhere
    assert np.count_nonzero(changed[y0:y1, x0:x1]) > 30
    assert s["preview_text"].startswith("Preview: cord")


def test_the_grade_and_metrics_shown_are_those_of_metrics_json(a_demo_session):
    s = a_demo_session
    metrics = json.loads((s["out"] / "metrics.json").read_text(encoding="utf-8"))
    assert s["grade_text"] == f"Bilsky grade {metrics['bilsky_grade']}"
    assert metrics["bilsky_grade"] == "2"  # the demo phantom's grade
    assert s["reason_text"] == metrics["bilsky_reason"]
    expected = [[f"metric-{r['key']}", r["value"]] for r in metric_rows(metrics)]
    assert s["table"] == expected
    assert [r for r in s["table"] if r[0] == "metric-mscc_percent"] == [
        ["metric-mscc_percent", format_value(metrics["mscc_percent"], "%")]
    ]
    assert s["plot_width"] > 0  # the CSA plot is an image that decoded
    assert s["error"] == ""


def test_the_3d_view_shows_the_models_with_the_distance_map(a_demo_session):
    s = a_demo_session
    box = s["views"]["3d"][0]
    empty, measured = region(s["step3"], box), region(s["step4"], box)
    assert coloured_pixels(empty) < 200  # before the metrics: background only
    # cord, sac and mass models: thousands of coloured pixels; red where the mass presses on
    # the cord (the cord's distance map; the patch lies partly behind the mass: about 100 px)
    assert coloured_pixels(measured) > 5000
    assert red_pixels(measured) > 50


def test_the_3d_view_colours_the_lesion_as_its_block(a_demo_session):
    s = a_demo_session
    box = s["views"]["3d"][0]
    before, measured = region(s["step3"], box), region(s["step4"], box)
    # lesion 1's magenta (0.90, 0.20, 0.70): nowhere before the metrics, the mass after
    assert magenta_pixels(before) == 0
    assert magenta_pixels(measured) > 1000
    [block] = s["lesions"]
    [lesion] = lesion_blocks(json.loads((s["out"] / "metrics.json").read_text(encoding="utf-8")))
    rgb = tuple(int(lesion["color"][i : i + 2], 16) for i in (1, 3, 5))
    assert rgb == (230, 51, 178)
    assert block["border"] == f"rgb{rgb}"  # the block's colour bar: the same colour


def test_the_level_table_and_the_lesion_block_are_those_of_metrics_json(a_demo_session):
    s = a_demo_session
    metrics = json.loads((s["out"] / "metrics.json").read_text(encoding="utf-8"))
    rows = level_rows(metrics)
    expected = [
        [
            f"level-{r['index']}",
            [r["level"], r["cord_min_csa_mm2"], r["cord_ap_min_mm"], r["canal_min_area_mm2"],
             r["lesions"], r["flagged"]],
            r["is_flagged"],
        ]
        for r in rows
    ]  # fmt: skip
    assert s["levels"] == expected and len(expected) >= 3
    assert [r[1][0] for r in s["levels"]] == [r["level"] for r in metrics["levels"]]
    # the demo's grade-2 mass deforms the cord: its level is flagged, names the lesion, says why
    assert any(flagged and cells[4] == "1" for _, cells, flagged in s["levels"])
    assert s["level_reasons"] == [
        [f"level-why-{r['index']}", r["flag_reason"]] for r in rows if r["is_flagged"]
    ]
    assert all("below its neighbours" in text for _, text in s["level_reasons"])
    [block] = s["lesions"]
    [lesion] = lesion_blocks(metrics)
    assert block["id"] == "lesion-1" and block["title"] == lesion["title"]
    assert block["grade"].endswith(f"Bilsky {metrics['bilsky_grade']}")
    assert block["reason"] == metrics["bilsky_reason"]
    assert f"MSCC\t{format_value(metrics['mscc_percent'], '%')}" in block["values"]


def test_a_click_on_a_level_row_moves_the_slice_views_to_that_level(a_demo_session):
    s = a_demo_session
    metrics = json.loads((s["out"] / "metrics.json").read_text(encoding="utf-8"))
    row = metrics["levels"][s["jump_row"]]
    assert row["lesion_ids"] == []
    reader = vtk.vtkXMLPolyDataReader()
    reader.SetFileName(str(s["out"] / "models" / "cord_centerline.vtp"))
    reader.Update()
    lps = level_point_lps(row["arc_range_mm"], reader.GetOutput())
    ras = [-lps[0], -lps[1], lps[2]]
    assert s["level_text"].startswith(f"Views at {row['level']}: R {ras[0]:.1f}")
    # the slice offsets of the page's sliders put each view through the point: axial at its
    # S, coronal at its A, sagittal at -R (that view's normal points to the patient's left)
    axial, coronal, sagittal = s["sliders_after"]
    assert (axial, coronal, sagittal) == pytest.approx((ras[2], ras[1], -ras[0]), abs=1e-3)
    assert abs(s["sliders_before"][0] - axial) > 5.0  # the axial view moved from the worst section
    for box in s["views"]["slices"]:  # and the views still show the MRI
        assert region(s["step4_level"], box).std() > 10.0


def test_teaching_explains_each_metric_and_highlights_the_mass(a_demo_session):
    s = a_demo_session
    rows = {row[0]: row for row in s["teaching_rows"]}
    assert "Volume enclosed by the smoothed surface" in rows["metric-mass_volume_ml"][1]
    assert "on the epidural mass" in rows["metric-mass_volume_ml"][1].lower()
    assert rows["metric-mass_volume_ml"][2] and rows["metric-suv_max"][2]
    assert not rows["metric-mscc_percent"][2]  # measured on the cord: not highlighted
    box = s["views"]["3d"][0]
    mass_only = region(s["teaching"], box)
    # the mass alone at full opacity, in its lesion's colour; the cord faded
    assert coloured_pixels(mass_only) > 3000
    assert magenta_pixels(mass_only) > 2000


def test_report_and_scene_are_written_for_download(a_demo_session):
    from MESCCAnalyzerLib.mrml.scene import read_mrb

    s = a_demo_session
    metrics = json.loads((s["out"] / "metrics.json").read_text(encoding="utf-8"))
    report = (s["out"] / "report.html").read_text(encoding="utf-8")
    assert f"id=bilsky-grade>{metrics['bilsky_grade']}<" in report
    scene = read_mrb(s["out"] / "scene.mrb")
    names = {
        scene.GetNthNodeByClass(i, "vtkMRMLModelNode").GetName()
        for i in range(scene.GetNumberOfNodesByClass("vtkMRMLModelNode"))
    }
    assert {"cord", "thecal sac", "mass"} <= names
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") >= 1


# -- bad input: one line, exit 2, nothing served ---------------------------------------------------
def test_a_study_outside_the_allowed_folder_is_refused(tmp_path):
    allowed = tmp_path / "class"
    allowed.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "t2.nii.gz").write_bytes(b"")
    process = serve(
        ["--study", str(outside), "--allowed-root", str(allowed), "--port", str(free_port())],
        cwd=tmp_path,
    )
    process.wait(timeout=60)
    output = stop(process)
    assert process.returncode == 2
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and "outside the allowed folder" in lines[0], output


def test_a_symlink_out_of_the_allowed_folder_is_refused(tmp_path):
    from MESCCAnalyzerLib.cli.serve_cmd import resolve_study
    from MESCCAnalyzerLib.errors import InputError

    allowed = tmp_path / "class"
    allowed.mkdir()
    outside = tmp_path / "private"
    outside.mkdir()
    (outside / "t2.nii.gz").write_bytes(b"")
    (allowed / "link").symlink_to(outside)
    with pytest.raises(InputError, match="outside the allowed folder"):
        resolve_study(str(allowed / "link"), str(allowed))
    (allowed / "study").mkdir()
    (allowed / "study" / "t2.nii.gz").write_bytes(b"")
    assert resolve_study(str(allowed / "study"), str(allowed)) == (allowed / "study").resolve()
