"""The browser page: trame-slicer's slice and 3D views on a real MRML scene, and the panel's
five steps (study, registration, segmentation, metrics, report).

Every button calls :class:`MESCCAnalyzerLib.mrml.workflow.Workflow` (the logic the Slicer
panel calls) on the scene trame-slicer renders; this module only wires state, views and
downloads. One scene per server: a class looks at one study together.
"""

from __future__ import annotations

import asyncio
import base64
import io
import logging
from pathlib import Path

from trame.app import get_server
from trame.ui.vuetify3 import VAppLayout
from trame.widgets import client, html
from trame.widgets import vuetify3 as v3
from trame_slicer import module as trame_slicer_module
from trame_slicer.core import LayoutManager, SlicerApp
from trame_slicer.rca_view import register_rca_factories
from trame_slicer.segmentation import SegmentationEffectPaint

from ..errors import MESCCError
from ..mrml.registration import show_pet_overlay
from ..mrml.scene import save_mrb
from ..mrml.study import load_study_folder
from ..mrml.workflow import Workflow
from ..presentation import (
    NO_LESION_TEXT,
    lesion_blocks,
    lesion_color,
    lesions_of,
    level_rows,
    levels_note,
)
from .access import MAX_FRAME_BYTES, client_error_text
from .guard import ServerGuard
from .teaching import STRUCTURE_NAMES, metric_rows

logger = logging.getLogger(__name__)

LAYOUT = "Quad View"  # coronal + sagittal | 3D + axial (trame-slicer's grid)
PAINT_SEGMENTS = ("cord", "CSF", "mass", "bone", "other")
STEPS = ("Study", "Registration", "Segmentation", "Metrics", "Report")


class MesccWebApp:
    """One page, one scene, one :class:`Workflow`.

    ``out_dir``: where the session's files go (metrics.json when measured, report.html and
    scene.mrb when downloaded). ``demo_folder``: write the phantom there and load it at start;
    ``study_folder``: a study laid out as the phantom writes it (t2, t1, ct, pet_dicom).
    """

    def __init__(
        self,
        server=None,
        *,
        out_dir: str | Path,
        demo_folder: str | Path | None = None,
        study_folder: str | Path | None = None,
        grade: str = "2",
        seed: int = 0,
    ):
        self.server = get_server(server, client_type="vue3")
        self.server.enable_module(trame_slicer_module)
        self.state, self.ctrl = self.server.state, self.server.controller
        self.out_dir = Path(out_dir)
        self.demo_folder = Path(demo_folder) if demo_folder else None
        self.study_folder = Path(study_folder) if study_folder else None
        self.grade, self.seed = grade, seed

        self.slicer_app = SlicerApp()
        self.scene = self.slicer_app.scene
        register_rca_factories(self.slicer_app.view_manager, self.server)
        self.layout_manager = LayoutManager(self.scene, self.slicer_app.view_manager, self.server)
        self.layout_manager.register_layout_dict(LayoutManager.default_grid_configuration())
        self.flow = Workflow(self.scene)
        self.nodes = None  # mrml.study.StudyNodes
        self.preview = None
        self.transform = None
        self.metrics_nodes = None
        self._editing = False

        self._init_state()
        self._build_ui()
        self.layout_manager.set_layout(LAYOUT)
        self._plain_blending_in_3d()
        self.state.change("teaching", "highlight")(self._on_highlight)
        self.state.change("painting", "paint_segment")(self._on_paint)

    # -- state ------------------------------------------------------------------------------------
    def _init_state(self):
        s = self.state
        s.trame__title = "MESCC Analyzer"
        s.update(
            {
                "busy": False,
                "error": "",
                "step": 0,
                "done": [False] * len(STEPS),
                "study_text": "No study loaded.",
                "registration_text": "",
                "segmentation_text": "",
                "has_preview": False,
                "painting": False,
                "paint_segment": "mass",
                "paint_segments": list(PAINT_SEGMENTS),
                "measured": False,
                "grade": "",
                "grade_reason": "",
                "metric_rows": [],
                "level_rows": [],
                "levels_note": "",
                "level_text": "",
                "level_selected": -1,
                "lesion_blocks": [],
                "no_lesion_text": NO_LESION_TEXT,
                "csa_plot": "",
                "report_text": "",
                "teaching": False,
                "highlight": "",
                "structure_names": STRUCTURE_NAMES,
            }
        )

    def _mark_done(self, index: int, *, advance: bool = True):
        """Tick a step; open the next one (the metrics stay open: they are read there)."""
        done = list(self.state.done)
        done[index] = True
        self.state.done = done
        if advance:
            self.state.step = min(index + 1, len(STEPS) - 1)

    async def _run(self, action, *args):
        """Run one step: busy flag on the page, errors as one sentence, never a traceback."""
        self.state.busy = True
        self.state.error = ""
        self.state.flush()
        await asyncio.sleep(0.05)  # let the busy flag reach the page before the work blocks
        try:
            return action(*args)
        except MESCCError as exc:
            self.state.error = str(exc)
        except Exception as exc:  # the page must say something, not hang
            logger.exception("step failed")
            self.state.error = client_error_text(exc)  # the traceback stays in the log
        finally:
            self.state.busy = False
            self.state.flush()
            self._render_all()
        return None

    def _plain_blending_in_3d(self):
        """Translucent models (sac 25 %, mass 80 %) with plain alpha blending.

        Depth peeling needs alpha bit planes, which the offscreen (EGL) render windows here do
        not have: with it on, every translucent model vanished from the 3D view.
        """
        for view in self.slicer_app.view_manager.get_threed_views():
            view_node = view.get_view_node()
            if view_node is not None:
                view_node.SetUseDepthPeeling(False)
            view.renderer().SetUseDepthPeeling(False)

    def reset_views(self):
        self.slicer_app.display_manager.reset_views()
        if self.flow.last_metrics is not None:
            self.flow.show_results()
        self._render_all()

    async def _reset_when_sized(self, **_):
        """Fit the views once the page has given them their size (the first render is 300 px)."""
        await asyncio.sleep(1.0)
        self.reset_views()

    def _render_all(self):
        for view in self.slicer_app.view_manager.get_views():
            view.schedule_render()

    # -- 1. study ------------------------------------------------------------------------------------
    def load(self):
        if self.nodes is not None:
            return
        if self.demo_folder is not None:
            self.nodes = self.flow.load_sample(self.demo_folder, grade=self.grade, seed=self.seed)
            kind = f"phantom, Bilsky grade {self.grade} (seed {self.seed})"
        else:
            self.nodes = load_study_folder(self.scene, self.study_folder)
            self.nodes.segmentation = self.flow.create_segmentation(self.nodes.mri)
            if self.nodes.labels is not None:  # a reference labelmap stays hidden, as in Slicer
                self.nodes.labels.GetDisplayNode().SetVisibility(False)
            kind = "study folder"
        n = self.nodes
        if n.pet is not None:
            show_pet_overlay(self.scene, n.mri, n.pet)
        else:
            self.slicer_app.display_manager.show_volume_in_slice_background(n.mri)
        self.slicer_app.display_manager.reset_views()
        names = [x.GetName() for x in (n.mri, n.t1, n.ct, n.pet) if x is not None]
        self.state.study_text = f"{n.folder.name}: {kind}. Volumes: {', '.join(names)}."
        seeds = "seed strokes from the phantom's truth" if self.demo_folder else "no seeds yet"
        self.state.segmentation_text = f"Segmentation '{n.segmentation.GetName()}': {seeds}."
        self._mark_done(0)

    # -- 2. registration ---------------------------------------------------------------------------
    def register(self):
        n = self._need_study()
        if n.ct is None:
            self.state.registration_text = "No CT in this study: nothing to register."
        else:
            outcome = self.flow.register(n.mri, n.ct, n.pet, transform_node=self.transform)
            self.transform = outcome.transform_node  # a second run updates it, as in Slicer
            self.state.registration_text = "CT and PET registered to the MRI. " + (
                outcome.quality_text
            )
        self._mark_done(1)

    # -- 3. segmentation --------------------------------------------------------------------------
    def grow(self):
        n = self._need_study()
        self._stop_painting()
        self.preview, text = self.flow.grow_preview(
            n.segmentation, n.mri, n.pet, preview_node=self.preview
        )
        self.state.segmentation_text = text
        self.state.has_preview = True

    def accept(self):
        n = self._need_study()
        self.flow.accept_preview(n.segmentation, self.preview, n.mri)
        self.preview = None
        self.state.has_preview = False
        self.state.segmentation_text = "Accepted: the grown structures replace the seeds."
        self._mark_done(2)

    def discard(self):
        self.flow.discard_preview(self.preview)
        self.preview = None
        self.state.has_preview = False
        self.state.segmentation_text = "Preview discarded; paint more seeds and grow again."

    def _on_paint(self, painting, paint_segment, **_):
        if self.nodes is None:
            return
        editor = self.slicer_app.segmentation_editor
        if not painting:
            self._stop_painting()
            return
        if not self._editing:
            editor.set_active_segmentation(self.nodes.segmentation, self.nodes.mri)
            self._editing = True
        segment_id = self.nodes.segmentation.GetSegmentation().GetSegmentIdBySegmentName(
            paint_segment
        )
        if segment_id:
            editor.set_active_segment_id(segment_id)
        editor.set_active_effect_type(SegmentationEffectPaint)

    def _stop_painting(self):
        if self._editing:
            self.slicer_app.segmentation_editor.deactivate_effect()
        if self.state.painting:
            self.state.painting = False

    # -- 4. metrics -----------------------------------------------------------------------------------
    def measure(self):
        n = self._need_study()
        if self.preview is not None:
            self.accept()
        self._remove_metrics_nodes()
        self.metrics_nodes = self.flow.compute_metrics(
            n.segmentation, n.mri, n.pet, vertebrae_node=n.vertebrae
        )
        self.flow.show_results()
        from ..measure.metrics import write_metrics

        self.out_dir.mkdir(parents=True, exist_ok=True)
        write_metrics(self.flow.last_metrics, self.out_dir)
        m = self.flow.last_metrics.metrics
        self.state.measured = True
        self.state.grade = "" if m.get("bilsky_grade") is None else str(m["bilsky_grade"])
        self.state.grade_reason = str(m.get("bilsky_reason") or "")
        self.state.metric_rows = metric_rows(m)
        self.state.level_rows = level_rows(m)
        self.state.levels_note = levels_note(m)
        self.state.level_text = ""
        self.state.level_selected = -1
        self.state.lesion_blocks = lesion_blocks(m)
        self.state.csa_plot = csa_plot_data_url(self.flow.last_metrics)
        self._on_highlight(self.state.teaching, self.state.highlight)
        self._mark_done(3, advance=False)

    def _remove_metrics_nodes(self):
        """A re-run replaces the previous models, tables and chart (the colour node stays)."""
        m = self.metrics_nodes
        if m is None:
            return
        for node in m.nodes():
            if node.GetScene() is not None:
                self.scene.RemoveNode(node)
        self.metrics_nodes = None

    def jump_to_level(self, index: int):
        """A row of the level table: the slice views (and the 3D camera) on that level."""
        point = self.flow.jump_to_level(int(index))
        row = self.state.level_rows[int(index)]
        self.state.level_selected = int(index)
        ras = (-point[0], -point[1], point[2])
        self.state.level_text = (
            f"Views at {row['level']}: R {ras[0]:.1f}, A {ras[1]:.1f}, S {ras[2]:.1f} mm"
        )

    def _on_highlight(self, teaching, highlight, **_):
        """Teaching: the structure a metric is measured on in full, the others faded."""
        if self.metrics_nodes is None:
            return
        from ..mrml.metrics import MODEL_STYLE

        for key, node in self.metrics_nodes.models.items():
            display = node.GetDisplayNode()
            opacity = MODEL_STYLE[key][2]
            if teaching and highlight:
                opacity = 1.0 if key == highlight else 0.08
            display.SetOpacity(opacity)
        segments = {"cord": ("cord",), "sac": ("cord", "CSF"), "mass": ("mass",)}
        segmentation = self.nodes.segmentation
        display = segmentation.GetDisplayNode()
        for name in ("cord", "CSF", "mass", "bone", "other"):
            segment_id = segmentation.GetSegmentation().GetSegmentIdBySegmentName(name)
            if segment_id:
                shown = not (teaching and highlight) or name in segments.get(highlight, ())
                display.SetSegmentVisibility(segment_id, shown)
        self._render_all()

    # -- 5. report ------------------------------------------------------------------------------------
    def write_report(self) -> Path:
        n = self._need_study()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.flow.save_report(self.out_dir / "report.html", n.mri, n.segmentation, n.pet)
        self.state.report_text = f"Report written: {path}"
        self._mark_done(4, advance=False)
        return path

    def write_scene(self) -> Path:
        self._need_study()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        # The page's segment editor node is the browser's tool state, not data (and a scene
        # without the Segment Editor module's classes refuses to import it): not saved.
        editors = self.scene.GetNodesByClass("vtkMRMLSegmentEditorNode")
        for i in range(editors.GetNumberOfItems()):
            editors.GetItemAsObject(i).SetSaveWithScene(False)
        path = save_mrb(self.scene, self.out_dir / "scene.mrb")
        self.state.report_text = f"Scene written: {path} (opens in 3D Slicer)"
        return path

    async def _download(self, writer):
        path = await self._run(writer)
        if path is None:
            return None
        return self.server.protocol.addAttachment(Path(path).read_bytes())

    async def download_report(self):
        return await self._download(self.write_report)

    async def download_scene(self):
        return await self._download(self.write_scene)

    def _need_study(self):
        if self.nodes is None:
            from ..errors import InputError

            raise InputError("load the study first", hint="step 1: Load study")
        return self.nodes

    # -- page -------------------------------------------------------------------------------------
    def _button(self, text, action, *, id, disabled="busy", **kwargs):
        async def click():
            await self._run(action)

        return v3.VBtn(
            text,
            id=id,
            click=click,
            disabled=(disabled,),
            color="primary",
            variant="flat",
            classes="mr-2 mb-2",
            **kwargs,
        )

    def _download_button(self, text, filename, callback, mime, id):
        name = self.ctrl.trigger_name(callback)
        return v3.VBtn(
            text,
            id=id,
            prepend_icon="mdi-download",
            disabled=("busy || !done[3]",),
            click=f"utils.download('{filename}', trigger('{name}'), '{mime}')",
            color="primary",
            variant="flat",
            classes="mr-2 mb-2",
        )

    def _build_ui(self):
        with VAppLayout(self.server, theme="dark") as layout:
            self.ui = layout
            client.ClientTriggers(mounted=self._reset_when_sized)
            with v3.VAppBar(density="compact"):
                v3.VToolbarTitle("MESCC Analyzer")
                v3.VProgressLinear(
                    id="busy",
                    v_show=("busy",),
                    indeterminate=True,
                    absolute=True,
                    location="bottom",
                )
                v3.VSpacer()
                v3.VBtn(
                    "Reset views",
                    id="btn-reset-views",
                    prepend_icon="mdi-fit-to-screen",
                    variant="text",
                    click=self.reset_views,
                    classes="mr-2",
                )
                v3.VSwitch(
                    id="teaching",
                    v_model=("teaching",),
                    label="Teaching",
                    hide_details=True,
                    density="compact",
                    color="amber",
                    classes="mr-4",
                )
            with v3.VNavigationDrawer(permanent=True, width=460, location="left"):
                v3.VAlert(
                    "{{ error }}",
                    id="error",
                    v_show=("error",),
                    type="error",
                    density="compact",
                    classes="ma-2",
                )
                with v3.VExpansionPanels(v_model=("step",), id="steps"):
                    self._study_panel()
                    self._registration_panel()
                    self._segmentation_panel()
                    self._metrics_panel()
                    self._report_panel()
            with v3.VMain():
                with html.Div(
                    id="views",
                    style="display: flex; width: 100%; height: calc(100vh - 48px);",
                ):
                    self.layout_manager.initialize_layout_grid(layout)

    def _panel_title(self, index):
        with v3.VExpansionPanelTitle(id=f"step-{index + 1}"):
            v3.VIcon(
                "mdi-check-circle",
                v_if=(f"done[{index}]",),
                color="green",
                size="small",
                classes="mr-2",
            )
            v3.VIcon("mdi-circle-outline", v_else=True, size="small", classes="mr-2")
            html.Span(f"{index + 1}. {STEPS[index]}")

    def _study_panel(self):
        with v3.VExpansionPanel():
            self._panel_title(0)
            with v3.VExpansionPanelText():
                html.P("{{ study_text }}", id="study-text", classes="text-body-2 mb-2")
                self._button("Load study", self.load, id="btn-load", disabled="busy || done[0]")

    def _registration_panel(self):
        with v3.VExpansionPanel():
            self._panel_title(1)
            with v3.VExpansionPanelText():
                html.P(
                    "Rigid Mattes mutual information, CT onto the MRI; the PET follows the CT.",
                    classes="text-body-2 mb-2",
                )
                self._button(
                    "Register", self.register, id="btn-register", disabled="busy || !done[0]"
                )
                html.P("{{ registration_text }}", id="registration-text", classes="text-body-2")

    def _segmentation_panel(self):
        with v3.VExpansionPanel():
            self._panel_title(2)
            with v3.VExpansionPanelText():
                html.P(
                    "Paint seeds with the brush in the slice views, then grow them into cord, "
                    "CSF, mass and bone.",
                    classes="text-body-2 mb-2",
                )
                with html.Div(classes="d-flex flex-wrap align-center mb-2 ga-2"):
                    v3.VSwitch(
                        id="paint",
                        v_model=("painting",),
                        label="Brush",
                        hide_details=True,
                        density="compact",
                        disabled=("busy || !done[0]",),
                        classes="mr-4",
                    )
                    with v3.VBtnToggle(
                        v_model=("paint_segment",),
                        mandatory=True,
                        density="compact",
                        variant="outlined",
                        divided=True,
                    ):
                        for name in PAINT_SEGMENTS:
                            v3.VBtn(name, value=name, id=f"seg-{name}", size="small")
                self._button(
                    "Grow from seeds", self.grow, id="btn-grow", disabled="busy || !done[0]"
                )
                self._button(
                    "Accept", self.accept, id="btn-accept", disabled="busy || !has_preview"
                )
                self._button(
                    "Discard", self.discard, id="btn-discard", disabled="busy || !has_preview"
                )
                html.P("{{ segmentation_text }}", id="segmentation-text", classes="text-body-2")

    def _metrics_panel(self):
        with v3.VExpansionPanel():
            self._panel_title(3)
            with v3.VExpansionPanelText():
                self._button(
                    "Compute metrics", self.measure, id="btn-metrics", disabled="busy || !done[0]"
                )
                with html.Div(v_if=("measured",)):
                    html.Div(
                        "Bilsky grade {{ grade }}",
                        v_if=("grade",),
                        id="bilsky-grade",
                        classes="text-h6",
                    )
                    html.Div(
                        "No lesion: no Bilsky grade",
                        v_else=True,
                        id="bilsky-grade-none",
                        classes="text-h6",
                    )
                    html.P("{{ grade_reason }}", id="bilsky-reason", classes="text-body-2 mb-2")
                    self._lesion_blocks()
                    self._levels_table()
                    with v3.VTable(density="compact", id="metrics-table"):
                        with html.Tbody():
                            with html.Tr(
                                v_for="row in metric_rows",
                                key="row.key",
                                id=("'metric-' + row.key",),
                                style=(
                                    "teaching && highlight === row.structure ? "
                                    "'background: rgba(255, 193, 7, 0.18)' : ''",
                                ),
                            ):
                                html.Td("{{ row.label }}")
                                html.Td("{{ row.value }}", classes="metric-value")
                                with html.Td(v_if=("teaching",), classes="text-caption py-1"):
                                    html.Div("{{ row.what }}")
                                    v3.VBtn(
                                        "{{ 'on the ' + row.structure_name }}",
                                        size="x-small",
                                        variant="tonal",
                                        color="amber",
                                        classes="teach-show",
                                        click="highlight = highlight === row.structure ? '' : row.structure",
                                    )
                    html.Img(
                        v_if=("csa_plot",),
                        id="csa-plot",
                        src=("csa_plot",),
                        style="width: 100%; background: white;",
                        classes="mt-2",
                    )

    def _lesion_blocks(self):
        """One card per lesion (cranial first), its colour that of the lesion in 3D."""
        html.P(
            "{{ no_lesion_text }}",
            v_if=("lesion_blocks.length === 0",),
            id="no-lesion",
            classes="text-body-2 mb-2",
        )
        with v3.VCard(
            v_for="block in lesion_blocks",
            key="block.id",
            id=("'lesion-' + block.id",),
            variant="tonal",
            density="compact",
            classes="mb-2 lesion-block",
            style=("'border-left: 6px solid ' + block.color",),
        ):
            with v3.VCardTitle(classes="text-subtitle-1 py-1"):
                html.Span("{{ block.title }}", classes="lesion-title")
                html.Span(" · Bilsky {{ block.grade }}", classes="lesion-grade")
            with v3.VCardText(classes="py-1"):
                html.Div("{{ block.reason }}", classes="text-caption mb-1 lesion-reason")
                with v3.VTable(density="compact"):
                    with html.Tbody():
                        with html.Tr(v_for="row in block.rows", key="row.key"):
                            html.Td("{{ row.label }}", classes="text-caption")
                            html.Td("{{ row.value }}", classes="text-caption lesion-value")

    def _levels_table(self):
        """The per-level table; a click on a row jumps the views to that level. A narrowed
        level is tinted, with why on a line of its own below it."""
        html.Div("Levels (click a row: the views jump there)", classes="text-subtitle-2 mt-2")
        html.P("{{ levels_note }}", v_if=("levels_note",), classes="text-caption")
        with v3.VTable(density="compact", id="levels-table", hover=True):
            with html.Thead():
                with html.Tr():
                    for name, unit in (
                        ("level", ""),
                        ("cord CSA min", "mm²"),
                        ("cord AP min", "mm"),
                        ("canal min", "mm²"),
                        ("lesion", ""),
                        ("narrowed", ""),
                    ):
                        with html.Th(classes="text-caption px-1"):
                            html.Div(name)
                            if unit:
                                html.Div(unit)
            with html.Tbody():
                with html.Template(v_for="row in level_rows", key="row.index"):
                    tint = "row.is_flagged ? 'background: rgba(255, 152, 0, 0.18);' : ''"
                    chosen = "level_selected === row.index ? 'font-weight: bold;' : ''"
                    with html.Tr(
                        id=("'level-' + row.index",),
                        classes=("row.is_flagged ? 'level-row flagged' : 'level-row'",),
                        style=(f"'cursor: pointer;' + ({tint}) + ({chosen})",),
                        click=(self._jump, "[row.index]"),
                    ):
                        html.Td("{{ row.level }}", classes="px-1")
                        html.Td("{{ row.cord_min_csa_mm2 }}", classes="px-1")
                        html.Td("{{ row.cord_ap_min_mm }}", classes="px-1")
                        html.Td("{{ row.canal_min_area_mm2 }}", classes="px-1")
                        html.Td("{{ row.lesions }}", classes="px-1")
                        html.Td("{{ row.flagged }}", classes="px-1")
                    with html.Tr(
                        v_if=("row.is_flagged",),
                        id=("'level-why-' + row.index",),
                        style=(f"'cursor: pointer;' + ({tint})",),
                        click=(self._jump, "[row.index]"),
                    ):
                        html.Td("{{ row.flag_reason }}", colspan=6, classes="text-caption px-1")
        html.P("{{ level_text }}", id="level-text", classes="text-caption")

    async def _jump(self, index):
        await self._run(self.jump_to_level, index)

    def _report_panel(self):
        with v3.VExpansionPanel():
            self._panel_title(4)
            with v3.VExpansionPanelText():
                self._download_button(
                    "Download report",
                    "mescc_report.html",
                    self.download_report,
                    "text/html",
                    id="btn-report",
                )
                self._download_button(
                    "Download scene",
                    "mescc_scene.mrb",
                    self.download_scene,
                    "application/octet-stream",
                    id="btn-scene",
                )
                html.P("{{ report_text }}", id="report-text", classes="text-body-2")

    # -- start ------------------------------------------------------------------------------------------
    def start(self, *, host: str, port: int, token: str, on_ready=None, **kwargs):
        """Serve the page (blocks until the server stops).

        Only a client holding ``token`` (see :mod:`.guard`) gets the page and the
        websocket; ``on_ready(port)`` is called once the server listens (``port`` may be 0
        for a free one).
        """
        guard = ServerGuard(token=token, host=host)
        self.server.options["ws_max_msg_size"] = MAX_FRAME_BYTES  # wslink's frame limit
        self.ctrl.on_server_bind.add(guard.install)
        if on_ready is not None:
            self.ctrl.on_server_ready.add(lambda **_: on_ready(self.server.port))
        self.server.start(
            host=host,
            port=port,
            open_browser=False,
            show_connection_info=False,  # trame's would print the address without the token
            **kwargs,
        )


def csa_plot_data_url(result) -> str:
    """The cord CSA along its centreline as a PNG data URL (the panel's plot chart)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cols = result.sections.columns()
    m = result.metrics
    arc = np.asarray(cols["arc_mm"], dtype=float)
    csa = np.asarray(cols["cord_csa_mm2"], dtype=float)
    fig, ax = plt.subplots(figsize=(4.4, 2.4), dpi=110)
    for lesion in lesions_of(m):  # each lesion's extent in its colour in 3D
        if lesion.get("arc_range_mm") is not None:
            lo, hi = lesion["arc_range_mm"]
            ax.axvspan(
                lo, hi, color=lesion_color(lesion["id"]), alpha=0.2, label=f"lesion {lesion['id']}"
            )
    ax.plot(arc, csa, color=(0.85, 0.55, 0.0), label="cord CSA")
    if m.get("worst_section_arc_mm") is not None:
        ax.axvline(m["worst_section_arc_mm"], color="0.3", linestyle=":", label="worst section")
    ax.set_xlabel("arc length (mm, inferior to superior)")
    ax.set_ylabel("cord CSA (mm²)")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
