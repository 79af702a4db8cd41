"""Digital twins: predictive models of recorded neurons (core + readout + loss).

Parts (``cores``, ``readouts``, ``losses``, ``metrics``, ``transforms``) are plain
modules and functions; :class:`neuroreg.twin.module.TwinModule` assembles them.
"""
