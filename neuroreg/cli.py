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
import os
import re
import sys
import traceback
from argparse import ArgumentError
from pathlib import Path

import pytorch_lightning as pl
import yaml
from jsonargparse import ActionConfigFile
from jsonargparse import Path as ArgPath
from jsonargparse.typing import PositiveInt
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI

from .io import CheckpointError, load_checkpoint, yaml_problem
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
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigDefaultsError(f"{path}: cannot read the config ({err})") from err
    try:
        node = yaml.compose(text)
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigDefaultsError(f"{path}: {yaml_problem(err)}") from err
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
            if body is not None and not yaml.safe_load(body):
                continue  # nothing but defaults
            try:
                self.apply_config(parser, cfg, self.dest, str(path) if body is None else body)
            except (TypeError, ValueError, ArgumentError) as err:
                keys, problem = condense_parser_error(str(err))
                where = locate_field(keys, [path])
                field = f"field '{'.'.join(keys)}': " if keys else ""
                raise ConfigDefaultsError(f"{path}{f', line {where[1]}' if where else ''}: {field}{problem}") from err
            if body is not None:
                cfg[self.dest][-1] = ArgPath(str(path), mode="fr")


class NeuroregCLI(LightningCLI):
    """LightningCLI with sizes linked from the data into the model, and interrupt-safe fits.

    ``data.num_classes`` and ``data.num_neurons`` are read off the instantiated
    data module and passed to the model, so configs never repeat them. The default
    logger is a CSV logger under ``runs/``.

    ``fit`` writes every checkpoint whole or not at all (:class:`~neuroreg.runs.checkpoints.AtomicCheckpointIO`),
    keeps ``checkpoints/last.ckpt`` and ``fit_status.json`` in the run dir; a
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
        kwargs.setdefault("exit_on_error", False)  # errors reach neuroreg.cli.main, which reports them briefly
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
        from neuroreg.runs.checkpoints import use_atomic_checkpoints
        from neuroreg.runs.loggers import RecordLoggers

        use_atomic_checkpoints(self.trainer)
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
            checkpoint_fits_model(ckpt, load_checkpoint(ckpt, mmap=True), given.get("model"))

    def _parse_ckpt_path(self) -> None:
        """Lightning's merge of the checkpoint's hyper-parameters into the config; one that does not
        fit the config's model is the checkpoint's fault, and the error says so."""
        try:
            super()._parse_ckpt_path()
        except ArgumentError as err:
            subcommand = self.config["subcommand"]
            model = self.config[subcommand].get("model")
            _, problem = condense_parser_error(str(err))
            raise CheckpointError(
                f"{self.config[subcommand]['ckpt_path']}: its hyper_parameters do not fit the config's model "
                f"{getattr(model, 'class_path', model)} ({problem}); is it a checkpoint of another kind of model?"
            ) from None

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


def checkpoint_fits_model(path: str | Path, checkpoint: dict, model) -> None:
    """Refuse a checkpoint of another kind of model than the config's (e.g. a twin's handed to a
    classifier config), before Lightning merges its hyper-parameters into the config.

    Raises:
        CheckpointError: the checkpoint names another model class, or holds hyper-parameters
            the config's model class does not take; the message names the file.
    """
    import inspect

    class_path = getattr(model, "class_path", None)
    hparams = checkpoint.get("hyper_parameters") or {}
    if not class_path or not isinstance(hparams, dict):
        return
    saved = hparams.get("_class_path")
    if isinstance(saved, str) and saved.rsplit(".", 1)[-1] != class_path.rsplit(".", 1)[-1]:
        raise CheckpointError(f"{path}: a checkpoint of {saved}, but the config's model is {class_path}; "
                              f"expected a checkpoint of a {class_path.rsplit('.', 1)[-1]}")
    try:
        module, name = class_path.rsplit(".", 1)
        params = inspect.signature(getattr(importlib.import_module(module), name)).parameters
    except (ImportError, AttributeError, ValueError, TypeError):
        return  # the config's own error, reported when it is parsed
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(k for k in hparams if not k.startswith("_") and k not in params)
    if unknown:
        raise CheckpointError(f"{path}: its hyper_parameters {unknown} are not arguments of {class_path} (the config's "
                              f"model); expected a checkpoint of a {name}, found one of another kind of model")


def run_cli(argv: list[str]) -> NeuroregCLI:
    """Run a Lightning subcommand (``fit``, ``validate``, ``test``, ``predict``) and return the CLI
    (without Lightning's messages that ask nothing of the user, see :mod:`neuroreg.console`)."""
    from pytorch_lightning import LightningDataModule, LightningModule

    from .console import quiet_lightning

    quiet_lightning()

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

#: one line per subcommand, for ``neuroreg --help``
SUBCOMMANDS: dict[str, str] = {
    "fit": "train a model from YAML configs (Lightning CLI; resumes an interrupted run)",
    "validate": "validate a checkpoint (Lightning CLI)",
    "test": "test a checkpoint (Lightning CLI)",
    "predict": "predict with a checkpoint (Lightning CLI)",
    "data": "list, fetch, verify and convert the public neural data sets",
    "eval": "evaluate a checkpoint's robustness (and brain similarity) into a report",
    "compare": "overlay the robustness curves of several evaluated runs",
    "repro": "reproduce a paper recipe end to end: twin, targets, fits, evaluations, report",
    "sweep": "expand a W&B sweep into command lines, or run its points (here or as a SLURM array)",
}


def print_help(file=None) -> None:
    """``neuroreg --help``: every subcommand, one line each (to ``file``, default stdout)."""
    print("usage: neuroreg [--debug] <subcommand> [options]   (neuroreg <subcommand> --help for its options)\n", file=file)
    print("subcommands:", file=file)
    for name, text in SUBCOMMANDS.items():
        print(f"  {name:9s} {text}", file=file)


#: the subcommands run by the Lightning CLI
LIGHTNING_SUBCOMMANDS = ("fit", "validate", "test", "predict")
#: exit status of a command refused for its input (a config, a file, an option)
EXIT_BAD_INPUT = 2
#: exit status of a command that failed while it ran (the file system, a bug)
EXIT_FAILED = 1
#: exit status after Ctrl-C (128 + SIGINT, as a shell reports it)
EXIT_INTERRUPTED = 130
#: flag, accepted anywhere on the command line, that shows the traceback of an error
DEBUG_FLAG = "--debug"
#: environment variable that does the same when set to 1 / true / yes
DEBUG_ENV = "NEUROREG_DEBUG"

_PACKAGE_DIR = str(Path(__file__).resolve().parent)
#: lines of jsonargparse's union messages that say nothing about the value
_NOISE = re.compile(r"(Does not validate against any of the Union subtypes|Subtypes: .*|Errors:|Given value type: .*"
                    r"|Expected a <class 'NoneType'>|Parsing of ckpt_path hyperparameters failed!)$")


def debug_requested(argv: list[str]) -> tuple[list[str], bool]:
    """``argv`` without :data:`DEBUG_FLAG`, and whether the flag or :data:`DEBUG_ENV` asks for tracebacks."""
    rest = [a for a in argv if a != DEBUG_FLAG]
    env = os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")
    return rest, env or len(rest) != len(argv)


def _chain(err: BaseException) -> list[BaseException]:
    """``err`` and the exceptions it was raised from or while handling, outermost first."""
    out: list[BaseException] = []
    while err is not None and all(err is not seen for seen in out):
        out.append(err)
        err = err.__cause__ or err.__context__
    return out


def _frames(err: BaseException) -> list:
    tb, out = err.__traceback__, []
    while tb is not None:
        out.append(tb.tb_frame)
        tb = tb.tb_next
    return out


def _raised_by_neuroreg(err: BaseException) -> bool:
    frames = _frames(err)
    return bool(frames) and frames[-1].f_code.co_filename.startswith(_PACKAGE_DIR)


def _text(err: BaseException) -> str:
    if isinstance(err, KeyError) and len(err.args) == 1 and isinstance(err.args[0], str):
        return err.args[0]  # str(KeyError) quotes it
    return str(err).strip() or type(err).__name__


def _building(err: BaseException) -> type | None:
    """The neuroreg class whose constructor ``err`` came out of (the outermost one), if any."""
    for frame in _frames(err):
        owner = frame.f_locals.get("self") if frame.f_code.co_name == "__init__" else None
        if owner is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
            return type(owner)
    return None


def condense_parser_error(message: str) -> tuple[list[str], str]:
    """The field a jsonargparse error is about (its keys, ``init_args`` between a class and its
    arguments) and the message without the union bookkeeping (subtypes, ``Given value: …``)."""
    path: list[str] = []
    problems: list[str] = []
    expected: list[str] = []
    found = None
    for line in message.splitlines():
        text = line.strip().removeprefix("- ").strip()
        if not text or _NOISE.fullmatch(text):
            continue
        key = re.fullmatch(r'Parser key "([^"]+)":\s*(.*)', text)
        if key:
            path.extend(key.group(1).split("."))
            text = key.group(2)
        cls = re.fullmatch(r"Problem with given class_path '([^']+)':\s*(.*)", text)
        if cls:
            path.append("init_args")
            text = cls.group(2)
        option = re.search(r"(?:Option|option) '([^']+)'", text)
        if option and "not accept" in text:
            path.extend(option.group(1).split("."))
        given = re.fullmatch(r"Given value: (.*)", text)
        if given:
            found = given.group(1)
            continue
        kind = re.fullmatch(r"Expected a <class '(\w+)'>(?:\. Got value: (.*))?", text)
        if kind:
            expected.append(kind.group(1))
            found = kind.group(2) or found
            continue
        if text:
            problems.append(text)
    if expected and not problems:
        problems.append(f"expected {' or '.join(expected)}" + (f", found {found!r}" if found and len(found) < 80 else ""))
    while path and path[-1] == "init_args":
        path.pop()
    return path, "; ".join(problems) or message.strip()


def _config_files(argv: list[str]) -> list[Path]:
    """The config files of a Lightning command line, each with the files its ``defaults`` list (in order)."""
    files: list[Path] = []
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--config=") else argv[i + 1] if arg in ("-c", "--config") and i + 1 < len(argv) else None
        if value is None or not Path(value).is_file():
            continue
        try:
            chain = config_chain(value)
        except ConfigDefaultsError:
            chain = [Path(value)]
        files += [p for p in chain if p not in files]
    return files


def _yaml_tree(path: Path):
    try:
        return yaml.compose(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None


def _lookup(node, keys: list[str]):
    """The YAML node under ``keys`` (``init_args`` may be left out, as jsonargparse allows), or ``None``."""
    for key in keys:
        if isinstance(node, yaml.SequenceNode) and key.isdigit() and int(key) < len(node.value):
            node = node.value[int(key)]
            continue
        if not isinstance(node, yaml.MappingNode):
            return None
        found = next((v for k, v in node.value if isinstance(k, yaml.ScalarNode) and k.value == key), None)
        if found is None and key != "init_args":
            return None
        node = found if found is not None else node
    return node


def locate_field(keys: list[str], files: list[Path]) -> tuple[Path, int] | None:
    """The file (the last one applied) and line that set the field ``keys``, else ``None``."""
    for path in reversed(files):
        node = _lookup(_yaml_tree(path), keys) if keys else None
        if node is not None:
            return path, node.start_mark.line + 1
    return None


def locate_class(cls: type, files: list[Path]) -> tuple[list[str], Path, int] | None:
    """Where a config names ``cls`` as a ``class_path`` (the last file applied that does): the
    field's keys, the file and the line."""

    def walk(node, keys):
        if isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                yield from walk(item, [*keys, str(i)])
        if not isinstance(node, yaml.MappingNode):
            return
        for k, v in node.value:
            if not isinstance(k, yaml.ScalarNode):
                continue
            if k.value == "class_path" and isinstance(v, yaml.ScalarNode) and v.value.rsplit(".", 1)[-1] == cls.__name__:
                yield keys, v.start_mark.line + 1
            yield from walk(v, [*keys, k.value])

    for path in reversed(files):
        for keys, line in walk(_yaml_tree(path), []):
            return keys, path, line
    return None


def _option(keys: list[str], argv: list[str]) -> str | None:
    """The command-line option of ``argv`` that sets the field ``keys`` (``init_args`` may be left out)."""
    names = {"--" + ".".join(keys), "--" + ".".join(k for k in keys if k != "init_args")}
    return next((a.split("=", 1)[0] for a in argv if a.split("=", 1)[0] in names), None)


def explain(err: BaseException, argv: list[str] | None = None) -> tuple[str, int]:
    """The message and exit status for an error that ended a ``neuroreg`` command.

    The message is the outermost one neuroreg raised (a library's wrapping around it, such
    as jsonargparse's union summaries, dropped); for a Lightning subcommand it also says which
    config file and line set the offending field (or the class whose constructor refused
    it), or lists the configs used.
    """
    chain = _chain(err)
    own = [e for e in chain if _raised_by_neuroreg(e)]
    # neuroreg's outermost message (a wrapper of its own adds context), else the library's outermost (it holds the field's path)
    inner = own[0] if own else chain[0]
    files = _config_files(argv or [])
    where = None
    if own:
        message = _text(inner)
        cls = _building(inner)
        found = locate_class(cls, files) if cls is not None else None
        if found is not None:
            keys, path, line = found
            field = re.match(r"'?([\w.]+)'?:", message)  # neuroreg's messages start with the field they are about
            full = [*keys, "init_args", *field.group(1).split(".")] if field else keys
            given = _option(full, argv or [])
            located = locate_field(full, files) if field and not given else None
            path, line = located or (path, line)
            where = f"option {given}" if given else f"{path}, line {line} ({'.'.join(keys)}: {cls.__name__})"
        elif cls is not None and not message.startswith(cls.__name__):
            message = f"{cls.__name__}: {message}"
    elif isinstance(inner, ArgumentError):
        keys, message = condense_parser_error(_text(inner))
        if keys:
            given = _option(keys, argv or [])
            located = None if given else locate_field(keys, files)
            where = f"{located[0]}, line {located[1]}" if located else f"option {given}" if given else None
            message = f"field '{'.'.join(keys)}': {message}"
    else:
        message = _text(inner)
    if where is None and files and not any(str(p) in message for p in files):
        where = "config " + ", ".join(str(p) for p in files)
    if where:
        message += f"\n  in {where}"
    if isinstance(inner, OSError) and not isinstance(inner, (FileNotFoundError, IsADirectoryError, NotADirectoryError)):
        return message, EXIT_FAILED
    if isinstance(inner, (ValueError, LookupError, TypeError, OSError, ImportError, ArgumentError, yaml.YAMLError)) \
            or type(inner).__name__ == "MisconfigurationException":
        return message, EXIT_BAD_INPUT
    if type(inner).__module__.startswith("neuroreg."):  # e.g. a failed stage or download: neuroreg's own report
        return message, EXIT_FAILED
    return f"{type(inner).__name__}: {message}", EXIT_FAILED  # unexpected: say what it was


def _interrupted(err: BaseException) -> bool:
    """Ctrl-C, or Lightning's ``exit(1)`` after it shut a fit down on Ctrl-C."""
    return any(isinstance(e, KeyboardInterrupt) for e in _chain(err))


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``neuroreg`` console script; returns the exit status.

    An error ends the command with a short message on stderr (the file and field, what was
    expected and what was found) and a non-zero status (see :func:`explain`), never a
    traceback unless ``--debug`` (anywhere on the command line) or ``NEUROREG_DEBUG=1`` asks
    for one; Ctrl-C ends it with status 130.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    argv, debug = debug_requested(argv)
    if argv and argv[0] in ("-h", "--help"):
        print_help()
        return 0
    if not argv:
        print(f"neuroreg: error: expected a subcommand, one of {', '.join([*LIGHTNING_SUBCOMMANDS, *TOOLS])}; found none "
              "(neuroreg --help says what each does)", file=sys.stderr)
        return EXIT_BAD_INPUT
    if not argv[0].startswith("-") and argv[0] not in (*LIGHTNING_SUBCOMMANDS, *TOOLS):
        print(f"neuroreg: error: expected a subcommand, one of {', '.join([*LIGHTNING_SUBCOMMANDS, *TOOLS])}; "
              f"found {argv[0]!r} (neuroreg --help lists them; neuroreg SUBCOMMAND --help for its options)", file=sys.stderr)
        return EXIT_BAD_INPUT
    name = f"neuroreg {argv[0]}" if not argv[0].startswith("-") else "neuroreg"
    try:
        if argv and argv[0] in TOOLS:
            return int(importlib.import_module(TOOLS[argv[0]]).main(argv[1:]) or 0)
        run_cli(argv)
    except SystemExit as err:
        if not _interrupted(err):
            raise
        return _report_interrupt(name, err, debug)
    except KeyboardInterrupt as err:
        return _report_interrupt(name, err, debug)
    except Exception as err:
        if debug:
            traceback.print_exception(err)
        message, status = explain(err, argv if argv and argv[0] not in TOOLS else [])
        print(f"{name}: error: {message}", file=sys.stderr)
        if not debug:
            print(f"{name}: (rerun with {DEBUG_FLAG} or {DEBUG_ENV}=1 for the traceback)", file=sys.stderr)
        return status
    return 0


def _report_interrupt(name: str, err: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(err)
    print(f"{name}: interrupted", file=sys.stderr)
    return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
