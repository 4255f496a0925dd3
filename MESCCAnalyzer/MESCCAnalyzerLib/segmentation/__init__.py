"""Seeded segmentation: cord, CSF, epidural mass and bone grown from a user's strokes.

* :mod:`.grow`: :class:`~.grow.SeedGrower`, the method the pipeline, the panel and
  ``mescc segment`` use (:class:`~.paths.PathGrower`), re-exporting :mod:`.inputs`;
* :mod:`.paths`: issue 16's shortest-path competition with intensity models learnt from the
  strokes (its battery: docs/segmentation.md);
* :mod:`.watershed`: the marker watershed with boundary refinement used before it (kept for
  the benchmarks' side-by-side tables);
* :mod:`.inputs`: checks of images, seeds and region, seed files and point lists, Dice;
* :mod:`.seeds`: strokes drawn from a truth labelmap the way a user draws them (tests,
  benchmarks, the demo).
"""
