"""Robustness and brain-similarity evaluation.

- :mod:`~neuroreg.evaluation.perturbations`: Gaussian noise and 12 common corruptions (5 severities, 32/64 px presets).
- :mod:`~neuroreg.evaluation.attacks`: PGD / FGSM (L∞, L2, restarts, EOT, step schedules), minimal perturbation
  search, the decision-based HopSkipJump (L2), AutoAttack and Square through ``pyautoattack``.
- :mod:`~neuroreg.evaluation.sanity`: flags against gradient masking and weak attacks.
- :mod:`~neuroreg.evaluation.brain`: neural predictivity (ridge, PLS), RSA and CKA per layer.
- :mod:`~neuroreg.evaluation.suite`: the ``quick`` / ``standard`` / ``full`` suites (budgets) and :func:`evaluate`.
- :mod:`~neuroreg.evaluation.callbacks`: the end-of-fit :class:`RobustnessEvaluation` callback.
- :mod:`~neuroreg.evaluation.report`: atomic report / plot writing.
- :mod:`~neuroreg.evaluation.commands`, :mod:`~neuroreg.evaluation.compare`: ``neuroreg eval`` / ``neuroreg compare``.
"""
