"""Analysis of neuroreg outputs for the notebooks in ``notebooks/``.

- :mod:`~neuroreg.analysis.results`: read a ``neuroreg repro`` folder; robustness curves
  and the comparison table (mean ± 95 % CI over seeds).
- :mod:`~neuroreg.analysis.twin`: digital-twin diagnostics (predicted vs recorded,
  oracle correlation per neuron, receptive-field positions).
- :mod:`~neuroreg.analysis.representations`: RDMs, eigenspectra with fitted α, CKA and
  predictivity profiles across layers of trained classifiers.

Plotting functions return matplotlib ``Figure`` objects (no pyplot state).
"""
