"""Everything a regularizer is pulled toward.

- :mod:`~neuroreg.targets.format`: the TargetSet file (targets aligned with an image
  set, content-keyed) and its block-by-block writer;
- :mod:`~neuroreg.targets.base`: the two source interfaces (targets aligned with the
  classification images; a population's own stimuli and responses as neural batches)
  and the hook through which a source asks for repro stages;
- :mod:`~neuroreg.targets.sources`: sources from data (simulated ground truth, a
  TargetSet file, a recording's responses);
- :mod:`~neuroreg.targets.controls`: the control sources (shuffled, pixels, random network);
- :mod:`~neuroreg.targets.rdm`: neural data that is only an RDM over a set of images
  (:class:`~neuroreg.targets.rdm.RDMTargets`) and its neural-batch sources for RSA
  (file, manifest converted on demand, image-shuffled and pixel-RDM controls);
- :mod:`~neuroreg.targets.twin`: targets predicted by a digital twin (fitted from its config);
- :mod:`~neuroreg.targets.writer`: streaming a twin's predictions into a TargetSet
  (the ``neuroreg predict`` callback).
"""
