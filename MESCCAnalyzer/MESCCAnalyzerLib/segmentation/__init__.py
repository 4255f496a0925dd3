"""Seeded segmentation: cord, CSF, epidural mass and bone grown from a user's strokes.

* :mod:`.grow`: :class:`~.grow.SeedGrower`, the method the pipeline, the panel and
  ``mescc segment`` use (the watershed of :mod:`.watershed`), re-exporting :mod:`.inputs`;
* :mod:`.watershed`: the marker watershed with boundary refinement;
* :mod:`.paths`: :class:`~.paths.PathGrower`, issue 16's shortest-path competition with
  intensity models learnt from the strokes (benchmarked in docs/segmentation.md, not used
  yet: see :mod:`.grow`);
* :mod:`.inputs`: checks of images, seeds and region, seed files and point lists, Dice;
* :mod:`.seeds`: strokes drawn from a truth labelmap the way a user draws them (tests,
  benchmarks, the demo).
"""
