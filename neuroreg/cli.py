"""The ``neuroreg`` command: Lightning CLI fits (fit / validate / test / predict)."""

from __future__ import annotations

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


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``neuroreg`` console script."""
    from pytorch_lightning import LightningDataModule, LightningModule

    NeuroregCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        args=argv if argv is not None else sys.argv[1:],
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
    )


if __name__ == "__main__":
    main()
