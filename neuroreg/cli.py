"""The ``neuroreg`` command.

``neuroreg fit|validate|test|predict`` are Lightning CLI subcommands driven by YAML
configs. Other subcommands are tools with their own argument parsers; each lives in
the module named in ``TOOLS`` and exposes ``main(argv: list[str]) -> int``.
"""

from __future__ import annotations

import importlib
import sys

from pytorch_lightning.cli import LightningCLI


class NeuroregCLI(LightningCLI):
    """LightningCLI with sizes linked from the data into the model.

    ``data.num_classes`` and ``data.num_neurons`` are read off the instantiated
    data module and passed to the model, so configs never repeat them. The default
    logger is a CSV logger under ``runs/``.
    """

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("data.num_classes", "model.init_args.num_classes", apply_on="instantiate")
        parser.link_arguments("data.num_neurons", "model.init_args.num_neurons", apply_on="instantiate")
        parser.set_defaults(
            {"trainer.logger": {"class_path": "pytorch_lightning.loggers.CSVLogger", "init_args": {"save_dir": "runs"}}}
        )


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
