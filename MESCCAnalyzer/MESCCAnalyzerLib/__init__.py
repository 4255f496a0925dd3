"""MESCCAnalyzer engine.

Layers:

* core modules (``study``, ``suv``, ``phantom``, ``registration``, ``segmentation``,
  ``surfaces``, ``compression``, ``bilsky``, ...): numpy, SimpleITK and vtk only, no
  ``slicer``/``qt`` import; they take and return plain data;
* ``mrml``: turns MRML scene nodes into core calls and results back into nodes; imports only
  what the ``slicer-core`` package provides;
* ``cli``: the ``mescc`` command line over the same core.

Labelmap convention: 1 spinal cord, 2 CSF (thecal sac minus cord), 3 epidural mass,
4 vertebral bone; thecal sac = 1 | 2. World coordinates in files are LPS (ITK).
"""

__version__ = "0.1.0"

LABEL_CORD = 1
LABEL_CSF = 2
LABEL_MASS = 3
LABEL_BONE = 4

LABEL_NAMES = {
    LABEL_CORD: "spinal_cord",
    LABEL_CSF: "csf",
    LABEL_MASS: "epidural_mass",
    LABEL_BONE: "vertebrae",
}
