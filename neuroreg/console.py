"""Lightning's console messages that say nothing a neuroreg user can act on, silenced by message.

:func:`quiet_lightning` is called before every Lightning subcommand (``neuroreg fit`` …,
and the fits of ``neuroreg repro``). It drops exactly these messages and nothing else:

- the advertising tips (``💡 Tip: … try installing litlogger / litmodels``), logged at
  INFO level by the trainer's logger and checkpoint connectors;
- ``LightningCLI's args parameter is intended to run from within Python…``: neuroreg
  hands the command line to the Lightning CLI on purpose (:func:`neuroreg.cli.run_cli`);
- ``Experiment logs directory … exists and is not empty. Previous log files … will be
  deleted``: a run folder holds neuroreg's own files (``fit_status.json``, the saved
  config) before the CSV logger starts, and a resumed fit keeps the ``metrics.csv``
  rows of its checkpoint (:mod:`neuroreg.runs.resume`), so nothing is lost;
- ``isinstance(treespec, LeafSpec)`` is deprecated: raised inside Lightning's own
  pytree helper by newer PyTorch, about Lightning's code.

Every other warning and log line is left as it is.
"""

from __future__ import annotations

import logging
import re
import warnings

#: regular expressions (matched at the start of the message) of the warnings dropped
NOISY_WARNINGS = (
    r"LightningCLI's args parameter is intended to run from within Python",
    r"Experiment logs directory .* exists and is not empty\. Previous log files in this directory will be deleted",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)
#: start of the INFO lines dropped from Lightning's loggers
NOISY_INFO = ("💡 Tip: ",)
_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero",
            "lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero")


class _DropTips(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.INFO and str(record.msg).startswith(NOISY_INFO))


_FILTER = _DropTips()


def quiet_lightning() -> None:
    """Install the filters of the module docstring (idempotent)."""
    for pattern in NOISY_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def is_noise(message: str) -> bool:
    """Whether ``message`` (a warning's text or a log line) is one :func:`quiet_lightning` drops."""
    return message.startswith(NOISY_INFO) or any(re.match(p, message) for p in NOISY_WARNINGS)
