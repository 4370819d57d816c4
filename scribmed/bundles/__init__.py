"""The MONAI bundles scribmed ships, and the helpers their configs call.

* :mod:`scribmed.bundles.workflow` — small factories the bundle configs use (fold cases,
  seeded loss and ranks, resume, checkpoint description, the SAM-SP stage).
* :mod:`scribmed.bundles.shipped` — where the shipped bundles are (inside the installed
  package, or the source tree), ``scribmed bundle list`` and ``scribmed bundle export``.
"""
