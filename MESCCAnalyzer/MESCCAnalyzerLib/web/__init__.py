"""The browser face of MESCC Analyzer (``mescc serve``): trame-slicer views on the MRML scene.

Imports slicer (slicer-core), vtk, trame and trame-slicer; never qt. Every action calls
:class:`MESCCAnalyzerLib.mrml.workflow.Workflow`, the logic the Slicer panel calls.
"""
