"""The ``neuroreg`` command.

``neuroreg fit|validate|test|predict`` are Lightning CLI subcommands driven by YAML
configs. Other subcommands are tools with their own argument parsers; each lives in
the module named in ``TOOLS`` and exposes ``main(argv: list[str]) -> int``.

A config may start from other configs: a top-level ``defaults:`` list names files
(relative to the config's folder) that are applied first, in order, each with its own
``defaults`` expanded the same way (a file reached twice is applied once, at its first
place); then the config itself is applied on top. So
``neuroreg fit --config experiments/li2019/mini/shuffled.yaml`` runs exactly as
``--config base.yaml --config similarity.yaml --config shuffled.yaml`` would (without
their ``defaults`` entries). The merge is jsonargparse's, as for several ``--config``:

- a mapping merges key by key, so an arm states only what differs;
- a list, a scalar and a dict-typed field (``regularizers: {name: Regularizer}``,
  ``neural: {name: NeuralSource}``) are replaced whole: an arm's ``regularizers``
  drops the base's entries it does not repeat;
- a ``class_path`` that changes keeps the previous ``init_args`` whose names the new
  class also accepts (defaults included), so an arm that swaps a class should state
  every argument it relies on.

Under ``experiments/``, each recipe scale keeps its shared part in a ``base.yaml`` that is
not run on its own; every arm starts from it (or from another arm) and holds the rest.
``--print_config`` shows an arm's whole, resolved config.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytorch_lightning as pl
import yaml
from jsonargparse import ActionConfigFile
from jsonargparse import Path as ArgPath
from jsonargparse.typing import PositiveInt
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .io import CheckpointError, load_checkpoint
from .runs.resume import plan_resume

#: top-level config key listing the configs a config starts from
DEFAULTS = "defaults"


class ConfigDefaultsError(TypeError):
    """A config's ``defaults`` list that cannot be used; the message names the file and
    entry. A ``TypeError`` so that the Lightning CLI reports it like any bad ``--config``."""


def config_defaults(path: str | Path) -> tuple[list[Path], str | None]:
    """The configs ``path`` lists under a top-level ``defaults:`` and its own text without
    that entry (``None`` when it has no ``defaults``: the file is used as it is).

    The rest of the text is kept byte for byte, so it loads exactly as the whole file would.

    Raises:
        ConfigDefaultsError: unreadable YAML, ``defaults`` not a non-empty list of file
            names, or a listed file that does not exist.
    """
    path = Path(path)
    text = path.read_text()
    try:
        node = yaml.compose(text)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigDefaultsError(f"{path}: cannot read YAML ({err})") from err
    if not isinstance(node, yaml.MappingNode) or not isinstance(loaded, dict) or DEFAULTS not in loaded:
        return [], None
    raw = loaded.pop(DEFAULTS)
    if not isinstance(raw, list) or not raw or not all(isinstance(name, str) and name for name in raw):
        raise ConfigDefaultsError(
            f"{path}: field '{DEFAULTS}': expected a non-empty list of config files relative to {path.parent}, found {raw!r}"
        )
    bases = []
    for i, name in enumerate(raw):
        base = path.parent / name
        if not base.is_file():
            raise ConfigDefaultsError(f"{path}: field '{DEFAULTS}[{i}]': file not found: {base}")
        bases.append(base)
    key, value = next((k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == DEFAULTS)
    body = text[: key.start_mark.index] + text[value.end_mark.index :]
    assert (yaml.safe_load(body) or {}) == loaded, f"{path}: removing '{DEFAULTS}' changed the rest of the file"
    return bases, body


def config_chain(path: str | Path) -> list[Path]:
    """Every file a config is built from, in the order they are applied: its ``defaults``
    (depth first, each file once, at its first place), then the config itself.

    Raises:
        ConfigDefaultsError: as :func:`config_defaults`, or ``defaults`` that form a cycle.
    """
    order: list[Path] = []
    stack: list[Path] = []

    def visit(p: Path) -> None:
        p = p.resolve()
        if p in stack:
            cycle = " -> ".join(str(s) for s in [*stack[stack.index(p):], p])
            raise ConfigDefaultsError(f"{stack[-1]}: field '{DEFAULTS}': the configs list each other in a cycle: {cycle}")
        if p in order:
            return
        stack.append(p)
        for base in config_defaults(p)[0]:
            visit(base)
        stack.pop()
        order.append(p)

    visit(Path(path))
    return order


class ComposedConfigFile(ActionConfigFile):
    """``--config``: a config file (its ``defaults`` applied first, see the module
    docstring) or a config string, as jsonargparse's :class:`ActionConfigFile`."""

    def __call__(self, parser, cfg, values, option_string=None):
        try:
            is_file = isinstance(values, str) and Path(values).is_file()
        except OSError:  # a config string too long for a file name
            is_file = False
        if not is_file:
            return super().__call__(parser, cfg, values, option_string)
        for path in config_chain(values):
            body = config_defaults(path)[1]
            if body is None:
                self.apply_config(parser, cfg, self.dest, str(path))
                continue
            if not yaml.safe_load(body):
                continue  # nothing but defaults
            try:
                self.apply_config(parser, cfg, self.dest, body)
            except TypeError as err:
                raise TypeError(f"{path}: {err}") from err
            cfg[self.dest][-1] = ArgPath(str(path), mode="fr")


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

    Every subcommand loads its checkpoint (``--ckpt_path``, or the one a fit resumes from)
    weights-only (:func:`neuroreg.io.load_checkpoint`): the file is checked when the
    arguments are parsed (before Lightning reads its hyper-parameters), and Lightning runs
    with ``weights_only=True``; ``--weights_only=false`` is refused.
    """

    def init_parser(self, **kwargs) -> LightningArgumentParser:
        """LightningCLI's parser, with a ``--config`` that expands ``defaults`` lists."""
        kwargs.setdefault("dump_header", [f"pytorch_lightning=={pl.__version__}"])
        parser = self.parser_class(**kwargs)
        parser.add_argument("-c", "--config", action=ComposedConfigFile,
                            help="Path to a configuration file in json or yaml format (its 'defaults' applied first).")
        return parser

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
        self._load_weights_only()

    def before_validate(self) -> None:
        self._load_weights_only()

    def before_test(self) -> None:
        self._load_weights_only()

    def before_predict(self) -> None:
        self._load_weights_only()

    def parse_arguments(self, parser, args) -> None:
        """Parse as LightningCLI does, then refuse ``--weights_only=false`` and a ``--ckpt_path``
        that holds more than plain data, before Lightning reads the file's hyper-parameters.

        Raises:
            CheckpointError: the message names the option or the file and what it asked for.
        """
        super().parse_arguments(parser, args)
        subcommand = self.config.get("subcommand")
        if not subcommand:
            return
        given = self.config[subcommand]
        if given.get("weights_only") is False:
            raise CheckpointError("--weights_only: expected true or null, found false; neuroreg loads every checkpoint "
                                  "weights-only, so that a file cannot run code")
        ckpt = given.get("ckpt_path")
        if ckpt and Path(ckpt).is_file():  # not one of Lightning's keywords ("last", "best", ...)
            load_checkpoint(ckpt, mmap=True)

    def _load_weights_only(self) -> None:
        """Have Lightning load the checkpoint weights-only (``--weights_only`` left ``null`` means
        torch's default, which an environment variable can turn off); for ``fit``, also check
        the checkpoint a resumed run continues from."""
        args = self.config_init[self.subcommand]
        args["weights_only"] = True
        ckpt = args.get("ckpt_path")
        if self.subcommand == "fit" and ckpt and Path(ckpt).is_file():
            load_checkpoint(ckpt, mmap=True)

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
    try:
        run_cli(argv)
    except CheckpointError as err:
        print(f"neuroreg: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
