"""Robustness and brain-similarity evaluation.

- :mod:`~neuroreg.evaluation.measurements`: one object per kind of evaluation (clean, Gaussian noise, corruptions,
  the robust accuracy ``robust_linf`` / ``robust_l2`` — the per-image worst case over the attack ensemble PGD,
  APGD-CE, APGD-T, the headline —, PGD L∞ / L2 and FGSM as diagnostics, AutoAttack, minimal perturbation,
  decision-based, Square, sanity, brain) with its name, budget fields, run, scalars, sanity checks, curve axis and
  labels.
- :mod:`~neuroreg.evaluation.suite`: the ``quick`` / ``standard`` / ``full`` budgets (validated when made; the
  ensemble never below AutoAttack's strength), the default measurement list and
  :func:`~neuroreg.evaluation.suite.evaluate`, which runs it.
- :mod:`~neuroreg.evaluation.perturbations`: Gaussian noise and 12 common corruptions (5 severities, 32/64 px presets).
- :mod:`~neuroreg.evaluation.attacks`: one module per family — PGD / FGSM (L∞, L2, restarts, EOT, step schedules),
  minimal perturbation search, AutoAttack and Square through ``pyautoattack``, the decision-based HopSkipJump and
  Boundary Attack (L2, through ART).
- :mod:`~neuroreg.evaluation.sanity`: flags against gradient masking and weak attacks.
- :mod:`~neuroreg.evaluation.brain`: neural predictivity (ridge, PLS), RSA and CKA per layer.
- :mod:`~neuroreg.evaluation.callbacks`: the end-of-fit :class:`RobustnessEvaluation` callback.
- :mod:`~neuroreg.evaluation.report`: atomic report / plot writing.
- :mod:`~neuroreg.evaluation.commands`, :mod:`~neuroreg.evaluation.compare`: ``neuroreg eval`` / ``neuroreg compare``.
"""
