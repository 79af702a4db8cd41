"""Run bookkeeping: everything a fit leaves in its run dir so it can be found, resumed and logged to.

- :mod:`~neuroreg.runs.random_state`: save / restore the global random states (python,
  numpy, torch, CUDA), as a dict, a context manager and a checkpoint callback.
- :mod:`~neuroreg.runs.checkpoints`: ``checkpoints/last.ckpt``, the resumable checkpoint.
- :mod:`~neuroreg.runs.status`: ``fit_status.json`` and the probe for a live process.
- :mod:`~neuroreg.runs.folders`: where the runs of a config live, and which one is resumable.
- :mod:`~neuroreg.runs.metrics_csv`: the one place that rewrites a run's ``metrics.csv``.
- :mod:`~neuroreg.runs.loggers`: ``loggers.json`` and logging a standalone evaluation to
  the loggers a run was trained with.
- :mod:`~neuroreg.runs.resume`: the resume decision of ``neuroreg fit``, made from the above.
"""
