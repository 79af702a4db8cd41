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
callback logs) go to ``RUN/eval/metrics.csv`` in Lightning's CSV layout.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml


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
        raise EvalError(f"{path}: cannot read YAML ({err})") from err
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


def load_model(ckpt: Path, config: Path) -> Any:
    """Rebuild the run's RegularizedClassifier from ``config`` and load ``ckpt``'s weights.

    Raises:
        EvalError: the config's model is not a RegularizedClassifier, the checkpoint is not
            a Lightning checkpoint, or its weights do not fit the model (another class or
            architecture); the message names the file.
    """
    import torch

    from neuroreg.models.classifier import RegularizedClassifier

    if not ckpt.is_file():
        raise EvalError(f"--ckpt: file {ckpt} does not exist")
    try:
        checkpoint = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as err:
        raise EvalError(f"{ckpt}: not a readable PyTorch checkpoint ({err})") from err
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise EvalError(f"{ckpt}: expected a Lightning checkpoint with a 'state_dict', found {type(checkpoint).__name__}")
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


def parser() -> argparse.ArgumentParser:
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
    return p


def main(argv: list[str]) -> int:
    """Entry point of ``neuroreg eval``; returns the exit status (2 on bad input)."""
    import json

    import torch

    from neuroreg.evaluation import sanity
    from neuroreg.evaluation.callbacks import table
    from neuroreg.evaluation.report import write_eval_dir
    from neuroreg.evaluation.suite import budget_for, evaluate, metrics

    args = parser().parse_args(argv)
    try:
        if args.max_images is not None and args.max_images < 1:
            raise EvalError(f"--max-images: expected an integer >= 1, found {args.max_images}")
        if args.eot_samples is not None and args.eot_samples < 1:
            raise EvalError(f"--eot-samples: expected an integer >= 1, found {args.eot_samples}")
        if bool(args.recording) != bool(args.layers):
            raise EvalError("--recording and --layers go together (brain similarity needs both)")
        config = args.config or find_run_config(args.ckpt)
        model = load_model(args.ckpt, config)
        data = load_data(args.data) if args.data else load_data(config)
        n_classes = int(getattr(data, "num_classes", model.head.out_features))
        if n_classes != model.head.out_features:
            raise EvalError(
                f"{args.data or config}: field 'data': expected a data set with {model.head.out_features} classes "
                f"(the checkpoint's head), found {n_classes}"
            )
        channels = getattr(data, "channels", None)
        if channels is not None and channels != model.in_channels:
            raise EvalError(
                f"{args.data or config}: field 'data': expected images with {model.in_channels} channels, found {channels}"
            )
        baseline = None
        if args.baseline:
            try:
                baseline = json.loads(args.baseline.read_text())
            except (OSError, ValueError) as err:
                raise EvalError(f"--baseline: cannot read report {args.baseline} ({err})") from err
            if not baseline.get("complete"):
                raise EvalError(f"--baseline: {args.baseline} has no \"complete\": true — a partial or old report")
        data.setup("test")
        loader = data.test_dataloader()
        device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
        report = evaluate(
            model, loader, budget_for(args.suite, max_images=args.max_images), seed=args.seed, device=device,
            progress=not args.no_progress, baseline=baseline, recording=args.recording, brain_layers=args.layers,
            brain_tier=args.tier, eot_samples=args.eot_samples,
        )
    except (EvalError, ValueError, FileNotFoundError) as err:
        print(f"neuroreg eval: error: {err}", file=sys.stderr)
        return 2
    report.update({"suite": args.suite, "checkpoint": str(args.ckpt), "config": str(config),
                   "data": str(args.data) if args.data else None})
    out = args.out or Path(config).parent / "eval"
    scalars = metrics(report)
    csv_text = "step," + ",".join(scalars) + "\n0," + ",".join(repr(v) for v in scalars.values()) + "\n"
    path = write_eval_dir(report, out.parent, out.name, extra={"metrics.csv": csv_text})
    print(f"neuroreg: evaluation report written to {path}")
    print(table(report))
    banner = sanity.format_failures(report["sanity"])
    if banner:
        print(banner)
    return 0
