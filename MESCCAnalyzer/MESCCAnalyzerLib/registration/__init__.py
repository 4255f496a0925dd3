"""PET-CT to MRI co-registration (rigid, optional B-spline refinement).

The MRI is the fixed (reference) image, the CT the moving image; a PET acquired on the same
PET-CT scanner shares the CT's physical frame and follows the CT's transform.

Transform convention (ITK's): the result maps a point of the **fixed (MRI) physical space,
LPS mm** to the matching point of the **moving (CT) physical space, LPS mm**. It is what
``SimpleITK.Resample(ct, mri, transform)`` needs to bring the CT onto the MRI grid, what
``SimpleITK.WriteTransform`` writes, and what 3D Slicer reads from a ``.tfm`` file (Slicer
shows it as the CT's parent transform "from parent" after its LPS/RAS conversion).

Method: Mattes mutual information (Mattes et al., IEEE TMI 22(1), 2003) on randomly sampled
points of the fixed image (or of a fixed mask), regular-step gradient descent over the six
rigid parameters (Euler angles about the fixed region's centre + translation, scaled by the
physical shift they cause), a multi-resolution pyramid built here per axis so that every
level keeps well over a thousand samples (coarse levels with a few hundred samples converge
to wrong optima), and an initialisation chosen among the scanners' frames, the images'
geometric centres and intensity centroids (or given by paired landmarks), to which an
exhaustive translation search (every shift within ``search_reach_mm`` scored at once by FFT,
overlap-weighted mutual information) adds its best peaks. The distinct starts run through the
pyramid and the best overlap-weighted metric wins; a run left creeping on its iteration limit
is restarted from where it stopped.

Modules, in the order of the data path:

* :mod:`.settings`: :class:`RegistrationSettings` (every tunable number) and the result types
  :class:`RegistrationResult`, :class:`LevelReport`;
* :mod:`.inputs`: checks of the images, the fixed mask and the options;
* :mod:`.pyramid`: the levels (shrunk, smoothed images and fixed region; edge sampling);
* :mod:`.starts` and :mod:`.search`: the starting transforms and the FFT translation search;
* :mod:`.optimiser`: one run at one level (rigid, with restarts, or B-spline);
* :mod:`.run`: :func:`register`, its steps from the inputs to the checked result;
* :mod:`.resample`: :func:`resample_onto`, moving-frame images onto the fixed grid;
* :mod:`.transforms` and :mod:`.sampling`: transforms as point maps (:func:`tre_mm`), points
  of a region, intensities at points and mutual information.

Voxel index <-> LPS conversions live in :mod:`MESCCAnalyzerLib.geometry`.
"""

from .inputs import mask_on_grid, validate_image
from .resample import resample_onto
from .run import register
from .sampling import mask_points_lps, overlap_fraction, sample_linear, shared_information_nats
from .settings import INIT_MODES, LevelReport, RegistrationResult, RegistrationSettings
from .transforms import affine_4x4_lps, rotation_angle_deg, transform_points, tre_mm

__all__ = [
    "INIT_MODES",
    "LevelReport",
    "RegistrationResult",
    "RegistrationSettings",
    "affine_4x4_lps",
    "mask_on_grid",
    "mask_points_lps",
    "overlap_fraction",
    "register",
    "resample_onto",
    "rotation_angle_deg",
    "sample_linear",
    "shared_information_nats",
    "transform_points",
    "tre_mm",
    "validate_image",
]
