"""Plan and run a recipe: fetch → twin fit → target prediction → fits → evaluation.

:func:`plan` turns a recipe scale, seeds and an output folder into :class:`Stage`\\ s,
each keyed by content; a launcher (:mod:`neuroreg.repro.launchers`: this machine's
cores through submitit's local executor, or SLURM jobs with dependencies) runs the ones
not done yet, in dependency order. Output layout (``OUT`` = ``runs/repro/<recipe>-<scale>`` by default)::

    OUT/repro.json                                the plan: recipe, seeds, arms, stages
    OUT/stages/fetch-<manifest>-<key>/done.json   fetched + verified files
    OUT/stages/twin-<key>/done.json               twin checkpoint (fitted, cached by content)
    OUT/stages/targets-<key>/done.json            targets predicted / prepared for a data section
    OUT/runs/<arm>/seed<s>-<key>/                 a fit: config.yaml, metrics.csv, checkpoints/,
                                                  final.ckpt, done.json
    OUT/runs/<arm>/seed<s>-<key>/evals/<key>/     evaluation: eval/report.json + plots, done.json
    OUT/report/                                   comparison (see :mod:`neuroreg.repro.report`)
    OUT/logs/<stage>-<UTC time>-<pid>.log         each stage's own output (Lightning's bars, warnings)
    OUT/logs/submitit/                            submitit's job files (pickles, its own logs)

A fit's key hashes its fully resolved config (every argument, defaults included, as
the Lightning CLI dumps it, with the recipe's and the arm's overrides and the seed; the
run folder and loggers excluded), the bytes of the YAML files it names (e.g. a twin
config) and neuroreg's version. A changed config gets a new folder; an unchanged one is
found done. Code changes inside neuroreg that keep its version do not change keys.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .recipe import Recipe, Scale
from .stages import Stage, config_digest, content_key

if TYPE_CHECKING:
    from neuroreg.targets.base import Prerequisite

_SKIP_KEYS = ("trainer.logger", "trainer.default_root_dir", "trainer.enable_progress_bar", "ckpt_path", "resume",
              "save_last_every_n_steps")


class ReproError(RuntimeError):
    """A stage failed, or the plan cannot be built; the message names the stage or file."""


# --------------------------------------------------------------------- parsing
def _parse_only_cli():
    from neuroreg.cli import NeuroregCLI

    class _ParseOnly(NeuroregCLI):
        """Parses a config like ``neuroreg fit`` would, instantiating nothing."""

        def _set_seed(self) -> None:
            pass

        def instantiate_classes(self) -> None:
            pass

        def after_instantiate_classes(self) -> None:
            pass

    return _ParseOnly


def resolved_config(config: Path, overrides: Sequence[str]) -> dict[str, Any]:
    """The fully resolved config of ``neuroreg fit --config config *overrides`` as a dict.

    Raises:
        ReproError: the config does not parse (the Lightning CLI's message, with the file).
    """
    from pytorch_lightning import LightningDataModule, LightningModule

    cls = _parse_only_cli()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
            cli = cls(
                LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                args=["--config", str(config), *overrides], run=False, auto_configure_optimizers=False,
                save_config_callback=None, parser_kwargs={"exit_on_error": False},
            )
    except (SystemExit, Exception) as err:  # jsonargparse raises several types
        raise ReproError(f"{config}: does not parse as a neuroreg fit config with {list(overrides)}: {err}") from err
    return yaml.safe_load(cli.parser.dump(cli.config, skip_validation=True))


def _drop(cfg: dict[str, Any], dotted: str) -> None:
    node = cfg
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = node.get(p) if isinstance(node, dict) else None
        if node is None:
            return
    if isinstance(node, dict):
        node.pop(parts[-1], None)


def _class_sections(value: Any) -> list[dict[str, Any]]:
    """Every ``{class_path: ..., init_args: {...}}`` inside ``value``, outer ones first."""
    found = []
    if isinstance(value, dict):
        if "class_path" in value:
            found.append(value)
        for v in value.values():
            found.extend(_class_sections(v))
    elif isinstance(value, list):
        for v in value:
            found.extend(_class_sections(v))
    return found


def _prerequisites(data: dict[str, Any]) -> list[tuple[dict[str, Any], Prerequisite]]:
    """``(config section, Prerequisite)`` for every source configured in a data section
    that asks for work before a fit (:meth:`~neuroreg.targets.base.TargetSource.prerequisites`)."""
    from neuroreg.targets.base import NeuralBatchSource, TargetSource

    found = []
    for section in _class_sections(data):
        module, _, name = str(section["class_path"]).rpartition(".")
        cls = getattr(importlib.import_module(module), name, None) if module else None
        if isinstance(cls, type) and issubclass(cls, (TargetSource, NeuralBatchSource)):
            found.extend((section, need) for need in cls.prerequisites(section.get("init_args") or {}))
    return found


def _instantiate_data(section: dict[str, Any]) -> Any:
    from jsonargparse import ArgumentParser
    from pytorch_lightning import LightningDataModule

    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(LightningDataModule, "data", required=True, fail_untyped=False)
    return parser.instantiate_classes(parser.parse_object({"data": section}))["data"]


def _check_brain_layers(recipe: Recipe, scale: Scale, label: str, cfg: dict[str, Any]) -> None:
    """Refuse the scale's brain-similarity layers when they are not module paths of ``label``'s
    backbone, at plan time (before any fit): the backbone is built from the resolved config."""
    from jsonargparse import ArgumentParser
    from torch import nn

    from neuroreg.evaluation.suite import check_brain_layers

    backbone = ((cfg.get("model") or {}).get("init_args") or {}).get("backbone")
    if not scale.eval.layers or backbone is None:
        return
    parser = ArgumentParser(exit_on_error=False)
    parser.add_subclass_arguments(nn.Module, "backbone", required=True, fail_untyped=False)
    module = parser.instantiate_classes(parser.parse_object({"backbone": backbone}))["backbone"]
    try:
        check_brain_layers(module, scale.eval.layers)
    except ValueError as err:
        raise ReproError(f"{recipe.path}: field 'scales.{scale.name}.eval.layers' (arm {label!r}): {err}") from err


# ------------------------------------------------------------------ stage work
def _run_fetch(name: str, data_dir: str | None, manifest_dir: str | None = None,
               mirror: str | None = None) -> Callable[[Stage], dict[str, Any]]:
    def run(stage: Stage) -> dict[str, Any]:
        from neuroreg.data.fetch import fetch
        from neuroreg.data.manifests import find_manifest

        results = fetch(find_manifest(name, manifest_dir), data_dir, mirror=mirror)
        return {"manifest": name, "files": [str(getattr(r, "path", r)) for r in results]}

    return run


#: data sources configured by a data manifest's name, which fetch it on first use
_MANIFEST_SOURCES = ("ManifestRecording", "ManifestRDM")


def _manifest_uses(cfg: dict[str, Any]) -> list[tuple[str, str | None, str | None, str | None]]:
    """``(manifest, data_dir, manifest_dir, mirror)`` of every manifest-backed data source configured in ``cfg``."""
    found = []
    for section in _class_sections(cfg.get("data") or {}):
        if str(section["class_path"]).rpartition(".")[2] in _MANIFEST_SOURCES:
            init = section.get("init_args") or {}
            if init.get("manifest") and init.get("fetch", True):
                found.append((str(init["manifest"]), init.get("data_dir"), init.get("manifest_dir"), init.get("mirror")))
    return found


def _run_prerequisite(need: Prerequisite) -> Callable[[Stage], dict[str, Any]]:
    def run(stage: Stage) -> dict[str, Any]:
        from neuroreg.runs.random_state import kept_random_state

        with kept_random_state():
            return need.run()

    return run


def _run_targets(section: dict[str, Any]) -> Callable[[Stage], dict[str, Any]]:
    def run(stage: Stage) -> dict[str, Any]:
        from neuroreg.runs.random_state import kept_random_state

        with kept_random_state():
            data = _instantiate_data(section)
            data.prepare_data()
            data.setup("fit")
        sizes = getattr(data, "num_neurons", {})
        return {"data_class": section.get("class_path"), "num_neurons": sizes}

    return run


def _loggers(stage_dir: Path, run_name: str, wandb: dict[str, Any] | None) -> list[dict[str, Any]]:
    loggers = [{"class_path": "pytorch_lightning.loggers.CSVLogger",
                "init_args": {"save_dir": str(stage_dir.parent), "name": "", "version": run_name}}]
    if wandb:
        loggers.append({"class_path": "pytorch_lightning.loggers.WandbLogger", "init_args": wandb})
    return loggers


def _run_fit(argv: list[str], progress: bool) -> Callable[[Stage], dict[str, Any]]:
    def run(stage: Stage) -> dict[str, Any]:
        from neuroreg.cli import run_cli
        from neuroreg.runs.checkpoints import LAST_CHECKPOINT
        from neuroreg.runs.status import read_status, write_status

        last = stage.folder / LAST_CHECKPOINT
        rank0 = _rank() == 0
        if rank0:
            _promote_hpc_checkpoint(stage.folder, last)
        status = read_status(stage.folder) or {}
        if last.is_file() and status.get("state") != "complete":
            # the launcher runs a stage in one job at a time, so no other process fits here:
            # an earlier "running" status is a dead (or preempted and requeued) fit, which
            # `neuroreg fit` then resumes from last.ckpt (keeping its metrics.csv rows)
            if status.get("state") == "running" and rank0:
                write_status(stage.folder, {**status, "state": "interrupted"})
            print(f"neuroreg repro: resuming {stage.name} from {last}", flush=True)
        elif rank0:  # nothing to resume from (or a complete fit whose stage did not finish): start clean
            # (the other ranks of a multi-node fit find nothing to resume either, and start fresh too)
            for child in stage.folder.iterdir():
                shutil.rmtree(child) if child.is_dir() else child.unlink()
        cli = run_cli([*argv, f"--trainer.enable_progress_bar={str(progress).lower()}"])
        trainer = cli.trainer
        if trainer.interrupted or not trainer.state.finished:
            raise ReproError(f"{stage.name}: the fit did not finish (status {trainer.state.status})")
        final = stage.folder / "final.ckpt"
        trainer.save_checkpoint(final)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if getattr(v, "numel", lambda: 1)() == 1}
        return {"checkpoint": str(final), "config": str(stage.folder / "config.yaml"), "metrics": metrics,
                "epochs": int(trainer.current_epoch), "global_step": int(trainer.global_step)}

    return run


def _run_eval(fit: Stage, spec: Any, seed: int, baseline: Stage | None, progress: bool,
              data_dir: str | None = None) -> Callable[[Stage], dict[str, Any]]:
    def run(stage: Stage) -> dict[str, Any]:
        from neuroreg.evaluation.commands import evaluate_checkpoint

        done = fit.result()
        base_report = None
        if baseline is not None:
            base_report = Path(baseline.result()["report"])
        recording = spec.load_recording(data_dir) if spec.recording is not None else None
        report, path = evaluate_checkpoint(
            Path(done["checkpoint"]), config=Path(done["config"]), data=spec.data, budget=spec.make_budget(),
            out=stage.folder / "eval", baseline=base_report, seed=seed, progress=progress,
            recording=recording, layers=list(spec.layers),
        )
        return {"report": str(Path(path) / "report.json"), "clean_accuracy": report.get("clean_accuracy"),
                "sanity_passed": report.get("sanity_passed")}

    return run


def _rank() -> int:
    """This process's global rank in a multi-task job (SLURM, submitit's local executor), else 0."""
    for key in ("SLURM_PROCID", "SUBMITIT_LOCAL_GLOBALID", "RANK"):
        if os.environ.get(key):
            return int(os.environ[key])
    return 0


def _promote_hpc_checkpoint(folder: Path, last: Path) -> None:
    """Make the checkpoint Lightning wrote on SLURM's requeue signal the fit's ``last.ckpt``.

    Under SLURM, Lightning's :class:`~lightning_fabric.plugins.environments.SLURMEnvironment`
    (``auto_requeue``) answers the signal sent before the time limit or a preemption by
    saving ``<default_root_dir>/hpc_ckpt_<n>.ckpt`` and requeueing the job. That file is
    a whole checkpoint (neuroreg's callbacks store their state in it too), newer than
    ``last.ckpt``; moving it there lets neuroreg's resume (:mod:`neuroreg.runs.resume`)
    continue from it, and no stale HPC checkpoint is left for Lightning to pick up later.
    """
    hpc = sorted(folder.glob("hpc_ckpt_*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not hpc:
        return
    newest = hpc[-1]
    if not last.is_file() or newest.stat().st_mtime >= last.stat().st_mtime:
        last.parent.mkdir(parents=True, exist_ok=True)
        os.replace(newest, last)
        print(f"neuroreg repro: the checkpoint saved on SLURM's requeue signal ({newest.name}) is now {last}", flush=True)
    for p in folder.glob("hpc_ckpt_*.ckpt"):
        p.unlink()


# ------------------------------------------------------------------------ plan
def plan(
    recipe: Recipe,
    scale: Scale,
    seeds: Sequence[int],
    out: Path,
    *,
    wandb_project: str | None = None,
    data_dir: str | None = None,
    progress: bool = True,
) -> list[Stage]:
    """The stages of ``recipe``'s ``scale`` for ``seeds``, in an order that respects
    dependencies (fetch, twin, targets, fits with each seed's baseline arms first,
    evals). Each arm's evaluation depends on the same seed's evaluation of its baseline
    arm (:meth:`~neuroreg.repro.recipe.Scale.baseline_of`), whose report is its
    reference for corruption errors; baseline arms are evaluated on their own.

    Raises:
        ReproError: an arm's config does not parse.
    """
    out = Path(out).resolve()
    stages: list[Stage] = []
    arms = sorted(scale.arms, key=lambda a: a.label not in scale.baselines)  # baseline arms first
    resolved: dict[str, dict[str, Any]] = {  # arm -> its resolved config
        arm.label: resolved_config(arm.config, [*scale.overrides, *arm.overrides]) for arm in arms
    }
    # what to fetch: the scale's list, then every manifest a fit or a prerequisite's config
    # (e.g. a twin's recordings) names, so no stage fetches on first use (compute nodes may
    # have no internet, and parallel stages would download the same files at once)
    from neuroreg.cli import config_chain
    from neuroreg.data.manifests import find_manifest

    needs = {label: _prerequisites(cfg.get("data") or {}) for label, cfg in resolved.items()}
    wanted = [(name, data_dir, None, None) for name in scale.fetch]
    prerequisite_configs: list[Path] = []
    for label, cfg in resolved.items():
        wanted += _manifest_uses(cfg)
        for _, need in needs[label]:
            prerequisite_configs += [d for d in need.depends_on if isinstance(d, Path) and d.suffix in (".yaml", ".yml")]
    for config in dict.fromkeys(prerequisite_configs):  # each file it is built from, as written (no CLI parse)
        for part in config_chain(config):
            wanted += _manifest_uses(yaml.safe_load(part.read_text()) or {})
    fetch_stages: dict[str, Stage] = {}  # by key: a manifest named twice is fetched once
    for name, fetch_dir, manifest_dir, mirror in wanted:
        fetch_dir = data_dir if fetch_dir is None else fetch_dir
        m = find_manifest(name, manifest_dir)
        key = content_key("fetch", name, config_digest(m.path) if getattr(m, "path", None) else name,
                          *([] if fetch_dir == data_dir else [str(fetch_dir)]))
        fetch_stages.setdefault(key, Stage(f"fetch {name}", "fetch", key, out / "stages" / f"fetch-{name}-{key}",
                                           _run_fetch(name, fetch_dir, manifest_dir, mirror)))
    fetches = list(fetch_stages.values())
    stages += fetches

    prepared: dict[str, Stage] = {}  # the stages target sources ask for (e.g. twin fits)
    targets: dict[str, Stage] = {}
    arm_targets: dict[str, Stage | None] = {}
    for arm in arms:
        cfg = resolved[arm.label]
        data = cfg.get("data") or {}
        source_deps = []
        for sec, need in needs[arm.label]:
            key = content_key(need.kind, sec, *[config_digest(d) if isinstance(d, Path) else d for d in need.depends_on])
            if key not in prepared:
                prepared[key] = Stage(f"{need.kind} {key}", need.kind, key, out / "stages" / f"{need.kind}-{key}",
                                      _run_prerequisite(need), deps=tuple(fetches))
            source_deps.append(prepared[key])
        init = data.get("init_args") or {}
        if init.get("targets") or init.get("neural"):
            key = content_key("targets", data, config_digest(arm.config))
            if key not in targets:
                targets[key] = Stage(f"targets {arm.label}", "targets", key, out / "stages" / f"targets-{key}",
                                     _run_targets(data), deps=(*fetches, *source_deps))
            arm_targets[arm.label] = targets[key]
        else:
            arm_targets[arm.label] = None
        _check_brain_layers(recipe, scale, arm.label, cfg)
    stages += list(prepared.values()) + list(targets.values())

    fits: dict[tuple[str, int], Stage] = {}
    for seed in seeds:
        for arm in arms:
            cfg = json.loads(json.dumps(resolved[arm.label]))
            cfg["seed_everything"] = seed
            for k in _SKIP_KEYS:
                _drop(cfg, k)
            key = content_key("fit", cfg, config_digest(arm.config))
            run_name = f"seed{seed}-{key}"
            folder = out / "runs" / arm.label / run_name
            wandb = None
            if wandb_project:
                wandb = {"project": wandb_project, "name": f"{recipe.name}-{scale.name}-{arm.label}-seed{seed}",
                         "group": f"{recipe.name}-{scale.name}", "job_type": arm.label, "id": f"{recipe.name}-{scale.name}-{key}",
                         "tags": [recipe.name, scale.name, arm.label], "save_dir": str(folder), "resume": "allow"}
            argv = ["fit", "--config", str(arm.config), *scale.overrides, *arm.overrides, f"--seed_everything={seed}",
                    f"--trainer.default_root_dir={folder}", f"--trainer.logger={json.dumps(_loggers(folder, run_name, wandb))}"]
            deps = tuple(d for d in (*fetches, arm_targets[arm.label]) if d is not None)
            trainer = resolved[arm.label].get("trainer") or {}
            resources = {k: trainer.get(k) for k in ("accelerator", "devices", "num_nodes")}
            fits[(arm.label, seed)] = Stage(f"fit {arm.label} seed {seed}", "fit", key, folder, _run_fit(argv, progress), deps=deps,
                                            info={"arm": arm.label, "seed": seed, "argv": argv, "trainer": resources})
    stages += list(fits.values())

    spec = scale.eval
    eval_digest = spec.describe()
    evals: dict[tuple[str, int], Stage] = {}
    for seed in seeds:
        for arm in arms:
            fit = fits[(arm.label, seed)]
            base_arm = scale.baseline_of(arm.label)
            baseline = None if base_arm is None else evals[(base_arm, seed)]
            key = content_key("eval", fit.key, eval_digest, seed, baseline.key if baseline else None)
            deps = (fit,) if baseline is None else (fit, baseline)
            evals[(arm.label, seed)] = Stage(f"eval {arm.label} seed {seed}", "eval", key, fit.folder / "evals" / key,
                                             _run_eval(fit, spec, seed, baseline, progress, data_dir), deps=deps,
                                             info={"arm": arm.label, "seed": seed, "baseline": base_arm})
    stages += list(evals.values())
    return stages


def describe(recipe: Recipe, scale: Scale, seeds: Sequence[int], stages: Sequence[Stage]) -> dict[str, Any]:
    """The JSON-able plan written to ``OUT/repro.json``: the scale's ``baseline`` and,
    per arm, the ``baseline`` it is compared with (``null`` for a baseline arm) and its
    ``controls``."""
    from neuroreg import __version__

    return {
        "recipe": recipe.name, "recipe_file": str(recipe.path), "title": recipe.title, "reference": recipe.reference,
        "scale": scale.name, "description": scale.description, "seeds": list(seeds), "baseline": scale.baseline,
        "arms": {a.label: {"config": str(a.config), "overrides": list(a.overrides), "baseline": scale.baseline_of(a.label),
                           "controls": list(a.controls)} for a in scale.arms},
        "eval": scale.eval.describe(),
        "neuroreg_version": __version__,
        "stages": [{"name": s.name, "kind": s.kind, "key": s.key, "folder": str(s.folder),
                    "deps": [d.name for d in s.deps], **s.info} for s in stages],
    }
