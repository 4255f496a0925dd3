"""DICOM Segmentation (SEG) of the final segmentation on the reference MRI (highdicom).

One binary segment per structure (cord, CSF, thecal sac, each lesion, vertebrae), each with
its SNOMED CT category and type (:mod:`.codes`); the thecal sac overlaps the cord and the CSF,
so the segments are stored as separate binary frames, one per slice and segment that holds
any voxel. The frames reference the MRI slices they lie on.
"""

from __future__ import annotations

from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.sr.codedict import codes as dcm_codes
from pydicom.uid import generate_uid

from .. import __version__
from .codes import CODING_SCHEME
from .sources import SourceSeries
from .structures import Structure

SEG_SERIES_NUMBER = 100
MANUFACTURER = "MESCCAnalyzer"
ALGORITHM = hd.AlgorithmIdentificationSequence(
    name="MESCCAnalyzer seeded growth",
    family=dcm_codes.cid7162.MultispectralProcessing,
    version=__version__,
)


def _color(rgb) -> hd.color.CIELabColor:
    return hd.color.CIELabColor.from_rgb(*(int(round(255 * c)) for c in rgb))


def segment_descriptions(structures: Sequence[Structure]) -> list[hd.seg.SegmentDescription]:
    """Segment ``i + 1`` for ``structures[i]``: label, codes, colour, algorithm."""
    return [
        hd.seg.SegmentDescription(
            segment_number=i + 1,
            segment_label=s.name,
            segmented_property_category=s.code.category,
            segmented_property_type=s.code.type,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.SEMIAUTOMATIC,
            algorithm_identification=ALGORITHM,
            tracking_uid=generate_uid(),
            tracking_id=s.name,
            display_color=_color(s.code.color),
        )
        for i, s in enumerate(structures)
    ]


def make_seg(mri: SourceSeries, structures: Sequence[Structure]) -> hd.seg.Segmentation:
    """The SEG of ``structures`` (masks on the MRI grid, kji) referencing ``mri``'s slices."""
    pixels = np.stack([s.mask_kji.astype(np.uint8) for s in structures], axis=-1)
    return hd.seg.Segmentation(
        source_images=mri.slices,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(structures),
        series_instance_uid=generate_uid(),
        series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name="mescc",
        software_versions=__version__,
        device_serial_number="1",
        series_description="MESCC segmentation",
        content_label="MESCC",
        coding_schemes=[CODING_SCHEME],
        content_description="cord, CSF, thecal sac, lesions, vertebrae",
    )
