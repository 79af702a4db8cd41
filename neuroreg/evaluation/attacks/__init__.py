"""Adversarial attacks (untargeted): gradient-based (white box) and decision-based.

The threat model: images ``x`` in [0, 1] with labels ``y``; an attack searches a
perturbation ``delta`` in the norm ball ``||delta||_p <= eps`` (per example) such that
``x + delta`` stays in [0, 1] and maximises the cross-entropy of ``model(x + delta)``
against ``y``. Supported norms: ``"linf"`` (p = inf) and ``"l2"`` (p = 2, over all of
``C * H * W`` pixels of one image).

The model is called as a function ``model(images) -> logits [batch, classes]`` on images
in [0, 1]; normalisation is its own business. **The caller puts the model in eval mode**
(dropout off, batch-norm running statistics) before attacking; these functions neither
check nor change the mode, and never touch parameter gradients (they differentiate with
respect to the input only). The decision-based attacks of
:mod:`~neuroreg.evaluation.attacks.decision` see only predicted labels and run without gradients.

One module per family:

- :mod:`~neuroreg.evaluation.attacks.base`: norms, input validation, the EOT loss average.
- :mod:`~neuroreg.evaluation.attacks.gradient`: :func:`pgd` and :func:`fgsm` (L∞ / L2, restarts, EOT, schedules).
- :mod:`~neuroreg.evaluation.attacks.minimal`: :func:`minimal_epsilon`, binary search over PGD radii.
- :mod:`~neuroreg.evaluation.attacks.autoattack`: the AutoAttack ensemble and its APGD members one at a
  time (:func:`~neuroreg.evaluation.attacks.autoattack.apgd`: APGD-CE, APGD-DLR, APGD-T; ``pyautoattack``).
- :mod:`~neuroreg.evaluation.attacks.square`: the Square black-box attack (``pyautoattack``).
- :mod:`~neuroreg.evaluation.attacks.decision`: the label-only :func:`hop_skip_jump` and :func:`boundary_attack` (ART).
"""
