"""A synthetic multimodal MESCC study with analytic ground truth.

A thoracic spine segment (vertebral bodies, discs, posterior elements, epidural fat, thecal
sac with CSF, spinal cord) with an epidural mass arising from a vertebral body and indenting
the sac and the cord to a chosen Bilsky grade. The anatomy is a set of implicit shapes in an
*anatomical frame* ``u = (left, posterior, superior)`` in mm, origin at the canal centre of the
affected vertebra; that frame is tilted in the MRI by a few degrees drawn from the seed.

Everything is generated from those shapes:

* MRI T2 and T1 on an anisotropic axial grid, with partial volume (2 x 2 x 2 supersampling),
  a smooth bias field and Rician noise; ``labels`` on the same grid (label of the voxel
  centre: 1 cord, 2 CSF, 3 mass, 4 bone);
* CT (HU) and PET (SUV, then Bq/ml in a DICOM series) on their own grids in the scanner frame,
  which is displaced from the MRI frame by a known rigid transform ``mri_to_ct``;
* ``truth``: mass volume (exact ellipsoid), cord and sac cross-sections perpendicular to the
  cord axis (areas and centroid chords from fine 2D supersampling), MSCC, MCC, canal
  compromise, mass-to-cord distance, computed from the shapes, never from the labelmap.

The PET DICOM writer converts SUV to Bq/ml with its own decay arithmetic, independent of
:mod:`MESCCAnalyzerLib.pet.suv`, so that the round trip tests the SUV code against an oracle.
"""

from .anatomy import GRADES, PhantomAnatomy, make_anatomy
from .files import write_pet_dicom, write_phantom
from .imaging import PhantomStudy, make_phantom, make_phantom_labels

__all__ = [
    "GRADES",
    "PhantomAnatomy",
    "PhantomStudy",
    "make_anatomy",
    "make_phantom",
    "make_phantom_labels",
    "write_pet_dicom",
    "write_phantom",
]
