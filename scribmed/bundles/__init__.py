"""The MONAI bundles scribmed ships, and the helpers their configs call (one concept per module).

* :mod:`scribmed.bundles.recipe_fold` — one fold of any recipe as a MONAI train workflow
  (``RecipeFoldTrainer``: ``scribmed cv --fold k``) and the recipe rebuilt from a fold's
  checkpoint; all a new recipe's bundle needs.
* :mod:`scribmed.bundles.instance_fold` — the instance bundles' int32 prediction, instance
  evaluation of a folder and checkpoint description.
* :mod:`scribmed.bundles.locate` — the shipped bundle folder (``bundle_dir``) and a fold's cases.
* :mod:`scribmed.bundles.checkpoints` — the bundles' checkpoints: loading weights, the
  checkpoint's training size, prediction, ``models/model.pt``, checkpoint description, the
  ``fold.json`` an evaluation writes.
* :mod:`scribmed.bundles.deferred` — built at ``initialize()``, run on first use (``call_once``,
  the deferred slice dataset).
* :mod:`scribmed.bundles.trainers` — the DMPLS / SAM-SP / mixsup trainer factories (with the
  CPU time limit), ``run_training`` and the DDP network helpers.
* :mod:`scribmed.bundles.sam_stages` — the SAM-SP and mixsup SAM stages and the mixsup supervision.
* :mod:`scribmed.bundles.export` — ``scribmed bundle list`` and ``scribmed bundle export`` (a copy
  whose configs name its own folder).
"""
