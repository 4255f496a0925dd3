"""Seeded segmentation: cord, CSF, epidural mass and bone grown from a user's strokes.

* :mod:`.grow`: :class:`~.grow.SeedGrower`, the method the pipeline, the panel and
  ``mescc segment`` use, and the checks of seeds and channels;
* :mod:`.paths`: :class:`~.paths.PathGrower`, a shortest-path competition with intensity
  models learnt from the strokes (issue 16's work in progress; benchmarked, not yet used);
* :mod:`.seeds`: strokes drawn from a truth labelmap the way a user draws them (tests,
  benchmarks, the demo).
"""
