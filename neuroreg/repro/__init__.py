"""Reproductions: paper recipes run end to end (``neuroreg repro``).

:mod:`~neuroreg.repro.recipe` reads ``experiments/<recipe>/recipe.yaml``;
:mod:`~neuroreg.repro.runner` plans and runs the content-keyed stages;
:mod:`~neuroreg.repro.report` writes the comparison (mean ± 95 % CI over seeds).
"""
