"""MRML logic: scene nodes in, core calls, results back into nodes.

Imports only what the PyPI package ``slicer-core`` provides (``slicer`` MRML classes, ``vtk``),
never ``qt`` or ``slicer.app``; every function takes the scene and nodes as arguments, so
pytest drives it on a bare ``slicer.vtkMRMLScene()`` and the Slicer panel calls the same code.
"""
