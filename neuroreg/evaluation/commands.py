"""``neuroreg eval``: run an evaluation suite on a trained checkpoint.

::

    neuroreg eval --ckpt RUN/checkpoints/epoch=11-step=264.ckpt --suite quick
    neuroreg eval --ckpt RUN/checkpoints/last.ckpt --suite standard --data other_data.yaml \\
        --baseline BASELINE_RUN/eval/report.json --recording heldout.h5 --layers layer1 layer2 layer3

The model is rebuilt from the run's ``config.yaml`` (saved by the Lightning CLI in the run
directory, found by walking up from the checkpoint) — backbone and regularizers are not
stored in the checkpoint's hyper-parameters — and its weights are loaded from the
checkpoint (strict). The data module is the run's unless ``--data`` names a YAML file
with a ``data:`` section (or a bare ``class_path`` / ``init_args``). Outputs go to
``RUN/eval/`` (``--out`` to change), written as a whole directory atomically, with
``"complete": true`` in ``report.json``; the ``eval/…`` scalars (the names the end-of-fit
callback logs) go to ``RUN/eval/metrics.csv`` in Lightning's CSV layout and, unless
``--no-log``, to the loggers the run was trained with, at the checkpoint's global step
(the run's CSV version directory, its wandb run resumed by id; see
:mod:`neuroreg.runs.loggers`).

In Python, :func:`evaluate_checkpoint` does the same with any
:class:`~neuroreg.evaluation.suite.Budget`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from neuroreg.io import yaml_problem

if TYPE_CHECKING:
    from neuroreg.data.recording import NeuralRecording
    from neuroreg.evaluation.suite import Budget


class EvalError(ValueError):
    """A checkpoint, config or data set that cannot be evaluated."""


def find_run_config(ckpt: Path) -> Path:
    """The ``config.yaml`` nearest above ``ckpt`` (its directory, then parents, 3 levels)."""
    for parent in list(ckpt.resolve().parents)[:3]:
        if (parent / "config.yaml").is_file():
            return parent / "config.yaml"
    raise EvalError(
        f"{ckpt}: no config.yaml found in its directory or the 2 above; the Lightning CLI saves it in the "
        "run directory — pass --config RUN/config.yaml"
    )


def _section(path: Path, key: str) -> dict[str, Any]:
    try:
        cfg = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise EvalError(f"{path}: {yaml_problem(err)}") from err
    if isinstance(cfg, dict) and key in cfg:
        cfg = cfg[key]
    if not isinstance(cfg, dict) or "class_path" not in cfg:
        found = sorted(cfg) if isinstance(cfg, dict) else type(cfg).__name__
        raise EvalError(f"{path}: field '{key}': expected a mapping with class_path / init_args, found {found}")
    return cfg


def _instantiate(section: dict[str, Any], base: type, key: str, source: Path) -> Any:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(base, key, required=True)
    try:
        cfg = parser.parse_object({key: section})
        return parser.instantiate_classes(cfg)[key]
    except Exception as err:  # jsonargparse raises several types; name the file
        raise EvalError(f"{source}: field '{key}': cannot build {section.get('class_path')!r}: {err}") from err


def read_checkpoint(ckpt: Path) -> dict[str, Any]:
    """Load a Lightning checkpoint dict (on the CPU).

    Raises:
        EvalError: the file is missing, unreadable, holds more than plain data (it is
            loaded weights-only: :func:`neuroreg.io.load_checkpoint`), or is not a dict
            with a ``state_dict``.
    """
    from neuroreg.io import CheckpointError, load_checkpoint

    if not ckpt.is_file():
        raise EvalError(f"--ckpt: file {ckpt} does not exist")
    try:
        checkpoint = load_checkpoint(ckpt)
    except CheckpointError as err:
        raise EvalError(str(err)) from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise EvalError(f"{ckpt}: expected a Lightning checkpoint with a 'state_dict', found {type(checkpoint).__name__}")
    return checkpoint


def load_model(ckpt: Path, config: Path, checkpoint: Mapping[str, Any] | None = None) -> Any:
    """Rebuild the run's RegularizedClassifier from ``config`` and load ``ckpt``'s weights.

    Args:
        ckpt: the checkpoint file (named in errors).
        config: the run's ``config.yaml``.
        checkpoint: ``ckpt`` already read by :func:`read_checkpoint` (read here if ``None``).

    Raises:
        EvalError: the config's model is not a RegularizedClassifier, the checkpoint is not
            a Lightning checkpoint, or its weights do not fit the model (another class or
            architecture); the message names the file.
    """
    from neuroreg.models.classifier import RegularizedClassifier

    if checkpoint is None:
        checkpoint = read_checkpoint(ckpt)
    section = _section(config, "model")
    hparams = checkpoint.get("hyper_parameters", {})
    init = dict(section.get("init_args") or {})
    for key in ("num_classes", "num_neurons", "image_size"):
        if hparams.get(key) is not None and key not in init:
            init[key] = hparams[key]
    model = _instantiate({**section, "init_args": init}, RegularizedClassifier, "model", config)
    if not isinstance(model, RegularizedClassifier):  # pragma: no cover - parser enforces it
        raise EvalError(f"{config}: field 'model': expected a RegularizedClassifier, found {type(model).__name__}")
    model.on_load_checkpoint(checkpoint)
    missing, unexpected = model.load_state_dict(checkpoint["state_dict"], strict=False)
    if missing or unexpected:
        raise EvalError(
            f"{ckpt}: field 'state_dict': expected the weights of {section['class_path']} as configured in {config}, "
            f"found {len(missing)} missing keys (e.g. {missing[:3]}) and {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]}) — a checkpoint of another model class or architecture"
        )
    return model.eval()


def load_data(config: Path, key: str = "data") -> Any:
    """Instantiate the LightningDataModule of ``config`` (a run config or a data YAML).

    The evaluation reads only test images and labels, so the neural parts of a
    RegularizedDataModule (``targets``, ``neural``) are dropped: no twin is fitted and no
    target file is read to evaluate.
    """
    from pytorch_lightning import LightningDataModule

    section = _section(config, key)
    init = dict(section.get("init_args") or {})
    if section["class_path"].endswith("RegularizedDataModule"):
        init.pop("targets", None)
        init.pop("neural", None)
    return _instantiate({**section, "init_args": init}, LightningDataModule, key, config)


def _read_baseline(baseline: str | os.PathLike[str] | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(baseline, Mapping):
        report, where = dict(baseline), "the baseline report"
    else:
        where = str(baseline)
        try:
            report = json.loads(Path(baseline).read_text())
        except (OSError, ValueError) as err:
            raise EvalError(f"--baseline: cannot read report {baseline} ({err})") from err
    if not isinstance(report, dict) or not report.get("complete"):
        raise EvalError(f"--baseline: {where} has no \"complete\": true — a partial or old report")
    return report


def _csv(scalars: Mapping[str, float], step: int) -> str:
    return "step," + ",".join(scalars) + f"\n{step}," + ",".join(repr(v) for v in scalars.values()) + "\n"


def evaluate_checkpoint(
    ckpt: str | os.PathLike[str],
    *,
    budget: Budget,
    config: str | os.PathLike[str] | None = None,
    data: str | os.PathLike[str] | None = None,
    out: str | os.PathLike[str] | None = None,
    baseline: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    suite: str | None = None,
    seed: int = 0,
    device: str | None = None,
    progress: bool = True,
    recording: str | os.PathLike[str] | NeuralRecording | None = None,
    layers: Sequence[str] = (),
    tier: str | None = "test",
    eot_samples: int | None = None,
    log_to_run: bool = True,
) -> tuple[dict[str, Any], Path]:
    """Evaluate a checkpoint with ``budget``, log the scalars to the run, write the eval directory.

    The model is rebuilt from the run's config and the checkpoint's weights
    (:func:`load_model`); the data module is the run's or ``data``'s; the suite runs
    (:func:`neuroreg.evaluation.suite.evaluate`); the ``eval/…`` scalars are logged to
    the run's loggers at the checkpoint's ``global_step`` (``log_to_run``; see
    :func:`neuroreg.runs.loggers.resolve_targets`, outcomes in
    ``report["run_loggers"]``, notes for loggers that cannot be reached in
    ``report["run_logger_notes"]``); then ``out`` is written as a whole directory
    atomically (:func:`~neuroreg.evaluation.report.write_eval_dir`): ``report.json``
    (``"complete": true``), ``metrics.csv`` and the plots. Nothing is printed.

    Args:
        ckpt: Lightning checkpoint of a RegularizedClassifier.
        budget: what to measure (:data:`~neuroreg.evaluation.suite.SUITES` or any
            :class:`~neuroreg.evaluation.suite.Budget`).
        config: the run's ``config.yaml`` (default: found above ``ckpt``).
        data: YAML with a ``data:`` section to evaluate on (default: the run's data).
        out: output directory (default: ``RUN/eval`` next to the config).
        baseline: a baseline's ``report.json`` (path) or report dict, for CE / relative mCE.
        suite: the suite's name, stored in the report.
        seed: seeds noise, corruptions and attack starts.
        device: ``"cpu"``, ``"cuda"``, … (default: cuda if available).
        progress: show a progress bar (stderr).
        recording, layers, tier: brain similarity on a held-out NeuralRecording (a .h5 path or a loaded one; the
            recording and the backbone layers go together).
        eot_samples: force the EOT samples (default: the budget's, if the model is stochastic).
        log_to_run: log the scalars to the run's loggers.

    Returns:
        ``(report, directory)``: the report as written to ``directory / "report.json"``.

    Raises:
        EvalError: bad arguments, checkpoint, config, data set, baseline or logger record
            (the message names the argument or file and field).
        FileNotFoundError: a missing recording.
        ValueError: bad test data (e.g. images outside [0, 1]).
    """
    import torch

    from neuroreg.evaluation.report import write_eval_dir
    from neuroreg.evaluation.suite import Budget, check_brain_layers, evaluate, metrics
    from neuroreg.runs.loggers import RunLogError, log_to_targets, resolve_targets

    if not isinstance(budget, Budget):
        raise EvalError(f"budget: expected a neuroreg.evaluation.suite.Budget, found {type(budget).__name__}")
    if eot_samples is not None and (isinstance(eot_samples, bool) or not isinstance(eot_samples, int) or eot_samples < 1):
        raise EvalError(f"--eot-samples: expected an integer >= 1, found {eot_samples!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise EvalError(f"--seed: expected an integer, found {seed!r}")
    layers = [layers] if isinstance(layers, str) else list(layers)
    if (recording is not None) != bool(layers):
        raise EvalError("--recording and --layers go together (brain similarity needs both)")
    if isinstance(recording, (str, os.PathLike)):  # check the file before the evaluation's long work, not after it
        from neuroreg.data.lazy import open_recording

        with open_recording(recording):
            pass
    ckpt = Path(ckpt)
    config = Path(config) if config is not None else find_run_config(ckpt)
    data = Path(data) if data is not None else None
    checkpoint = read_checkpoint(ckpt)
    model = load_model(ckpt, config, checkpoint)
    if layers:
        try:
            check_brain_layers(model, layers)
        except ValueError as err:
            raise EvalError(f"--layers ({config}): {err}") from err
    step = int(checkpoint.get("global_step") or 0)
    del checkpoint
    datamodule = load_data(data) if data else load_data(config)
    n_classes = int(getattr(datamodule, "num_classes", model.head.out_features))
    if n_classes != model.head.out_features:
        raise EvalError(
            f"{data or config}: field 'data': expected a data set with {model.head.out_features} classes "
            f"(the checkpoint's head), found {n_classes}"
        )
    channels = getattr(datamodule, "channels", None)
    if channels is not None and channels != model.in_channels:
        raise EvalError(f"{data or config}: field 'data': expected images with {model.in_channels} channels, found {channels}")
    base_report = _read_baseline(baseline) if baseline is not None else None
    targets, notes = [], []
    if log_to_run:
        try:
            targets, notes = resolve_targets(config)
        except RunLogError as err:
            raise EvalError(f"{err} (pass --no-log to evaluate without logging to the run)") from err
    datamodule.setup("test")
    loader = datamodule.test_dataloader()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    report = evaluate(
        model, loader, budget, seed=seed, device=device, progress=progress, baseline=base_report,
        recording=recording, brain_layers=layers, brain_tier=tier, eot_samples=eot_samples,
    )
    report.update({"suite": suite, "checkpoint": str(ckpt), "config": str(config),
                   "data": str(data) if data else None, "global_step": step})
    scalars = metrics(report)
    if log_to_run:
        report["run_loggers"] = log_to_targets(targets, scalars, step)
        report["run_logger_notes"] = notes
    out = Path(out) if out is not None else config.parent / "eval"
    try:
        path = write_eval_dir(report, out.parent, out.name, extra={"metrics.csv": _csv(scalars, step)})
    except OSError as err:  # e.g. a full disk: the directory is written whole or not at all
        raise OSError(err.errno, f"{os.strerror(err.errno) if err.errno else err}: cannot write the evaluation to {out} (nothing was written; "
                                 "a previous evaluation there is unchanged)") from err
    return json.loads(path.read_text()), path.parent


def parser() -> argparse.ArgumentParser:
    """The ``neuroreg eval`` argument parser."""
    from neuroreg.evaluation.suite import SUITES

    p = argparse.ArgumentParser(prog="neuroreg eval", description="Evaluate a checkpoint's robustness and brain similarity.")
    p.add_argument("--ckpt", required=True, type=Path, help="Lightning checkpoint of a RegularizedClassifier")
    p.add_argument("--suite", default="quick", choices=sorted(SUITES), help="budget (default: quick)")
    p.add_argument("--config", type=Path, help="the run's config.yaml (default: found above --ckpt)")
    p.add_argument("--data", type=Path, help="YAML with a data: section to evaluate on (default: the run's data)")
    p.add_argument("--out", type=Path, help="output directory (default: RUN/eval)")
    p.add_argument("--baseline", type=Path, help="report.json of a baseline run, for CE / relative mCE")
    p.add_argument("--recording", type=Path, help="held-out NeuralRecording (.h5) for brain similarity")
    p.add_argument("--layers", nargs="+", default=[], help="backbone layers for brain similarity, in depth order")
    p.add_argument("--tier", default="test", help="recording tier used for brain similarity (default: test)")
    p.add_argument("--max-images", type=int, help="override the suite's number of test images")
    p.add_argument("--eot-samples", type=int, help="force EOT samples (default: suite's, if the model is stochastic)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, … (default: cuda if available)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("--no-log", action="store_true",
                   help="do not log the scalars to the run's loggers (its CSV version directory, its wandb run)")
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``neuroreg eval``; returns the exit status (2 on bad input)."""
    from neuroreg.evaluation import sanity
    from neuroreg.evaluation.callbacks import table
    from neuroreg.evaluation.measurements import Sanity
    from neuroreg.evaluation.suite import budget_for

    args = parser().parse_args(argv)
    try:
        if args.max_images is not None and args.max_images < 1:
            raise EvalError(f"--max-images: expected an integer >= 1, found {args.max_images}")
        report, path = evaluate_checkpoint(
            args.ckpt, config=args.config, data=args.data, budget=budget_for(args.suite, max_images=args.max_images),
            out=args.out, baseline=args.baseline, suite=args.suite, seed=args.seed, device=args.device,
            progress=not args.no_progress, recording=args.recording, layers=args.layers, tier=args.tier,
            eot_samples=args.eot_samples, log_to_run=not args.no_log,
        )
    except (EvalError, ValueError, FileNotFoundError) as err:
        print(f"neuroreg eval: error: {err}", file=sys.stderr)
        return 2
    print(f"neuroreg: evaluation report written to {path / 'report.json'}")
    for outcome in report.get("run_loggers", []):
        verb = "logged to" if outcome["logged"] else "NOT logged to"
        print(f"neuroreg: eval scalars {verb} {outcome['target']}: {outcome['detail']}")
    for note in report.get("run_logger_notes", []):
        print(f"neuroreg: eval scalars not logged: {note}")
    print(table(report))
    banner = sanity.format_failures(report[Sanity.name])
    if banner:
        print(banner)
    return 0
