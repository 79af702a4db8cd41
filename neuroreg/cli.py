"""The ``neuroreg`` command.

``neuroreg fit|validate|test|predict`` are Lightning CLI subcommands driven by YAML
configs. Other subcommands are tools with their own argument parsers; each lives in
the module named in ``TOOLS`` and exposes ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys

from jsonargparse.typing import PositiveInt
from pytorch_lightning.cli import LightningCLI

from .runs.resume import plan_resume


class NeuroregCLI(LightningCLI):
    """LightningCLI with sizes linked from the data into the model, and interrupt-safe fits.

    ``data.num_classes`` and ``data.num_neurons`` are read off the instantiated
    data module and passed to the model, so configs never repeat them. The default
    logger is a CSV logger under ``runs/``.

    ``fit`` keeps ``checkpoints/last.ckpt`` and ``fit_status.json`` in the run dir; a
    fit that was killed resumes when the same command is run again (see
    :mod:`neuroreg.runs.resume`). Options (ignored by the other subcommands):

    - ``--resume`` (default ``true``): without ``--ckpt_path``, resume the newest
      unfinished run of the same config and logger; ``--resume=false`` always starts
      a new run.
    - ``--save_last_every_n_steps`` (default ``null``): also write ``last.ckpt`` every
      N optimizer steps, so a resumed fit loses less than an epoch (exactly resumable
      as well); ``null`` writes it at epoch ends only.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_neurons", "model.init_args.num_neurons", apply_on="instantiate")
        parser.set_defaults(
            {"trainer.logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}}
        )
        parser.add_argument("--resume", type=bool, default=True,
                            help="fit: resume the unfinished run of this config from its last.ckpt (false: start a new run)")
        parser.add_argument("--save_last_every_n_steps", type=PositiveInt | None, default=None,
                            help="fit: also write last.ckpt every N optimizer steps (null: at epoch ends only)")

    def before_instantiate_classes(self) -> None:
        """For ``fit``: decide whether to resume an unfinished run (may set the logger's version)."""
        if self.subcommand == "fit":
            self._resume_plan = plan_resume(self._parser("fit"), self.config["fit"])

    def before_fit(self) -> None:
        """Record the run's loggers in ``RUN/loggers.json`` (for ``neuroreg eval`` to log to them later),
        and set up resuming (callbacks, run status, ``ckpt_path``)."""
        from neuroreg.runs.loggers import RecordLoggers

        self.trainer.callbacks.append(RecordLoggers())
        self._resume_plan.before_fit(self.trainer, self.config_init["fit"])

    def after_fit(self) -> None:
        """Mark the run complete when the fit ended normally."""
        self._resume_plan.after_fit(self.trainer)


def run_cli(argv: list[str]) -> NeuroregCLI:
    """Run a Lightning subcommand (``fit``, ``validate``, ``test``, ``predict``) and return the CLI."""
    from pytorch_lightning import LightningDataModule, LightningModule

    return NeuroregCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
    )


#: tool subcommand -> module with ``main(argv) -> int``
TOOLS: dict[str, str] = {
    "data": "neuroreg.data.commands",
    "eval": "neuroreg.evaluation.commands",
    "compare": "neuroreg.evaluation.compare",
    "repro": "neuroreg.repro.commands",
    "sweep": "neuroreg.sweeps",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neuroreg`` console script; returns the exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in TOOLS:
        return int(importlib.import_module(TOOLS[argv[0]]).main(argv[1:]) or 0)
    run_cli(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
