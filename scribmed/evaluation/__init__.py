"""Evaluation of predictions: pairing with references, folder evaluation, run comparison, overlays, the paper table.

* :func:`~scribmed.evaluation.pairing.PairedCases` — the one generator that pairs predictions
  with reference cases (id, shape and spacing checks), used by the CV runner, ``scribmed evaluate``
  and the bundles' evaluate workflow.
* :func:`~scribmed.evaluation.folder.evaluate_folder` — ``scribmed evaluate``.
* :func:`~scribmed.evaluation.comparison.compare_runs` — ``scribmed cv compare``.
* :func:`~scribmed.evaluation.overlays.write_overlays` — image / scribble / prediction / truth PNGs.
* :func:`~scribmed.evaluation.paper_table.cv_markdown` — the cross-validation report.

The metrics themselves live in :mod:`scribmed.metrics` (a leaf package usable alone).
"""

from scribmed.evaluation.pairing import Pair, PairedCases, Reference

__all__ = ["Pair", "Reference", "PairedCases"]
