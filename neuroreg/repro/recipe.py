"""Recipes: ``experiments/<recipe>/recipe.yaml``, a paper's protocol as a set of arms.

A recipe names, per scale (``mini``: embedded data on a CPU; ``real``: small real
recordings, macaque V4 and the 92-image IT RDM, on a CPU; ``full``: downloaded data for a GPU), the data manifests to fetch, the arms (label → an ordinary ``neuroreg fit``
config, plus optional extra arguments and an optional baseline of its own), which arm is
the baseline, and the evaluation budget::

    title: "Li et al. 2019 — similarity loss toward mouse V1"
    reference: "Li, Z. et al. (2019). Learning from brains how to regularize machines. NeurIPS."
    scales:
      mini:
        description: "digits + simulated mouse V1"
        fetch: []
        arms:
          baseline: mini/baseline.yaml
          similarity: mini/similarity.yaml
          weight_0.1: {config: mini/similarity.yaml, overrides: ["--model.init_args.regularizers.similarity.init_args.weight=0.1"]}
          color_baseline: mini/color_baseline.yaml
          color_similarity: {config: mini/color_similarity.yaml, baseline: color_baseline}
          shuffled: mini/shuffled.yaml
          pixels: mini/pixels.yaml
          similarity_controlled: {config: mini/similarity.yaml, controls: [shuffled, pixels]}
        baseline: baseline
        overrides: []
        eval: {suite: quick, budget: {max_images: 256}, data: null, recording: null, layers: []}

The evaluation's brain similarity (:func:`neuroreg.evaluation.brain.brain_similarity`)
needs ``layers`` (backbone module paths) and a held-out ``recording``: a NeuralRecording
``.h5`` path relative to the recipe folder, or a data manifest,
``{manifest: cowley2023-v4-210325, options: {...}}``, converted on demand
(:class:`~neuroreg.data.recording_sources.ManifestRecording`; ``options`` go to the
manifest's reader); its test tier gives ceiling-normalised neural predictivity. RSA
against an RDM over its own images is a budget field (``rsa_rdm``, ``rsa_layers``; see
:class:`~neuroreg.evaluation.suite.Budget`).

Paths are relative to the recipe's folder. An arm's config may start from others through
its ``defaults:`` list (see :mod:`neuroreg.cli`); the recipe names the arm's own file.
Each arm is compared with a baseline arm: its own ``baseline`` when it names one, else
the scale's. An arm that is a baseline (the scale's, or one another arm names) is
compared with nothing, so it may not name a baseline itself (no chains); that lets one
scale hold several groups of arms, e.g. one per data set, each against its own control
(see :meth:`Scale.baseline_of`).

An arm may also name its ``controls``: other arms that differ from it only in where the
regularizer's targets come from (shuffled, pixel or random-network targets). The
report's claims table (:mod:`neuroreg.repro.report`) weighs the arm against its baseline
and against each control. A control is another arm of the scale, neither the arm's
baseline nor a baseline arm; an arm with controls is not a baseline arm itself.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from neuroreg.io import yaml_problem

#: the scales a recipe may define: embedded data on a CPU, small real recordings on a CPU, downloaded data on a GPU
SCALES = ("mini", "real", "full")

_TOP = {"title", "reference", "scales"}
_SCALE = {"description", "fetch", "arms", "baseline", "overrides", "eval"}
_EVAL = {"suite", "budget", "data", "recording", "layers"}


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the file and field."""


@dataclass(frozen=True)
class Arm:
    """One arm of a comparison: a fit config plus extra ``--key=value`` arguments.

    ``baseline`` is the label of the arm it is compared with when the recipe names one
    for this arm (``None``: the scale's baseline, see :meth:`Scale.baseline_of`);
    ``controls`` the labels of the arms it is also weighed against in the claims table.
    """

    label: str
    config: Path
    overrides: tuple[str, ...] = ()
    baseline: str | None = None
    controls: tuple[str, ...] = ()


@dataclass(frozen=True)
class ManifestRef:
    """A recording named by its data manifest, converted on demand with ``options``
    for the manifest's reader (see :class:`~neuroreg.data.recording_sources.ManifestRecording`)."""

    manifest: str
    options: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """JSON-able form (a cache-key component)."""
        return {"manifest": self.manifest, "options": self.options}


@dataclass(frozen=True)
class EvalSpec:
    """How every arm is evaluated: a suite, budget overrides, optional data, and the
    held-out recording of brain similarity with the layers it scores."""

    suite: str = "quick"
    budget: dict[str, Any] = field(default_factory=dict)
    data: Path | None = None
    recording: Path | ManifestRef | None = None
    layers: tuple[str, ...] = ()

    def make_budget(self):
        """The :class:`~neuroreg.evaluation.suite.Budget` of ``suite`` with ``budget`` applied."""
        from neuroreg.evaluation.suite import budget_for

        values = {k: tuple(v) if isinstance(v, list) else v for k, v in self.budget.items()}
        return budget_for(self.suite, **values)

    def describe(self) -> dict[str, Any]:
        """The JSON-able spec: what an evaluation's content key hashes and the plan records
        (a path recording as its path, a manifest one as ``{"manifest", "options"}``)."""
        from .stages import config_digest

        recording = self.recording.describe() if isinstance(self.recording, ManifestRef) else (
            None if self.recording is None else str(self.recording))
        return {"suite": self.suite, "budget": self.budget, "layers": list(self.layers),
                "data": config_digest(self.data) if self.data else None, "recording": recording}

    def load_recording(self, data_dir: str | os.PathLike | None = None, cache_dir: str | os.PathLike = "data/recordings"):
        """The recording brain similarity is measured on: the ``.h5`` path as given, or the
        manifest's :class:`~neuroreg.data.recording.NeuralRecording` (fetched if missing,
        checksums verified, converted with its reader and cached by content in
        ``cache_dir``); ``None`` without one."""
        if not isinstance(self.recording, ManifestRef):
            return self.recording
        from neuroreg.data.recording_sources import ManifestRecording

        return ManifestRecording(self.recording.manifest, data_dir=None if data_dir is None else str(data_dir),
                                 cache_dir=str(cache_dir), options=dict(self.recording.options) or None).load()


@dataclass(frozen=True)
class Scale:
    """One scale of a recipe."""

    name: str
    description: str
    arms: tuple[Arm, ...]
    baseline: str
    fetch: tuple[str, ...] = ()
    overrides: tuple[str, ...] = ()
    eval: EvalSpec = EvalSpec()

    def arm(self, label: str) -> Arm:
        for a in self.arms:
            if a.label == label:
                return a
        raise KeyError(label)

    @property
    def baselines(self) -> tuple[str, ...]:
        """Labels of the arms others are compared with: the scale's baseline first, then
        the arms named as ``baseline`` by other arms, in recipe order."""
        named = {a.baseline for a in self.arms if a.baseline}
        return (self.baseline, *(a.label for a in self.arms if a.label in named and a.label != self.baseline))

    def baseline_of(self, label: str) -> str | None:
        """The arm ``label`` is compared with: its own ``baseline``, else the scale's;
        ``None`` for an arm that is itself a baseline.

        Raises:
            KeyError: no arm ``label``.
        """
        arm = self.arm(label)
        if label in self.baselines:
            return None
        return arm.baseline or self.baseline


@dataclass(frozen=True)
class Recipe:
    """A parsed ``recipe.yaml``."""

    name: str
    path: Path
    title: str
    reference: str
    scales: dict[str, Scale]

    def scale(self, name: str) -> Scale:
        """The scale ``name``.

        Raises:
            RecipeError: the recipe has no such scale (lists the ones it has).
        """
        if name not in self.scales:
            raise RecipeError(f"{self.path}: field 'scales': expected a '{name}' scale, found {sorted(self.scales)}")
        return self.scales[name]


def _fail(path: Path, where: str, expected: str, found: Any) -> None:
    raise RecipeError(f"{path}: field '{where}': expected {expected}, found {found!r}")


def _strings(raw: Any, path: Path, where: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        _fail(path, where, "a list of strings", raw)
    return tuple(raw)


def _file(raw: Any, path: Path, where: str) -> Path:
    if not isinstance(raw, str) or not raw:
        _fail(path, where, "a file path relative to the recipe folder", raw)
    p = (path.parent / raw).resolve()
    if not p.is_file():
        raise RecipeError(f"{path}: field '{where}': file not found: {p}")
    return p


def _fit_config(raw: Any, path: Path, where: str) -> Path:
    """An arm's config file, its ``defaults`` chain checked (see :func:`neuroreg.cli.config_chain`)."""
    from neuroreg.cli import ConfigDefaultsError, config_chain

    p = _file(raw, path, where)
    try:
        config_chain(p)
    except ConfigDefaultsError as err:
        raise RecipeError(f"{path}: field '{where}': {err}") from err
    return p


def _unknown(raw: dict, allowed: set[str], path: Path, where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        prefix = f"{where}." if where else ""
        _fail(path, f"{prefix}{extra[0]}", f"one of {sorted(allowed)}", extra[0])


def _reference(raw: Any, path: Path, where: str) -> Path | ManifestRef | None:
    """The brain-similarity recording: ``None``, a path relative to the recipe folder, or
    ``{manifest: NAME, options: {...}}`` naming a known data manifest."""
    if raw is None:
        return None
    if isinstance(raw, str) and raw:
        return (path.parent / raw).resolve()
    if not isinstance(raw, dict):
        _fail(path, where, "a file path relative to the recipe folder or {manifest: NAME, options: {...}}", raw)
    _unknown(raw, {"manifest", "options"}, path, where)
    name, options = raw.get("manifest"), raw.get("options") or {}
    if not isinstance(name, str) or not name:
        _fail(path, f"{where}.manifest", "a data manifest name", name)
    if not isinstance(options, dict) or not all(isinstance(k, str) for k in options):
        _fail(path, f"{where}.options", "a mapping of reader options", options)
    from neuroreg.data.manifests import ManifestError, find_manifest

    try:
        find_manifest(name)
    except (ManifestError, KeyError, FileNotFoundError) as err:
        raise RecipeError(f"{path}: field '{where}.manifest': {err}") from err
    return ManifestRef(name, dict(options))


def _parse_eval(raw: Any, path: Path, where: str) -> EvalSpec:
    from neuroreg.evaluation.suite import SUITES, Budget

    if raw is None:
        return EvalSpec()
    if not isinstance(raw, dict):
        _fail(path, where, "a mapping", raw)
    _unknown(raw, _EVAL, path, where)
    suite = raw.get("suite", "quick")
    if suite not in SUITES:
        _fail(path, f"{where}.suite", f"one of {sorted(SUITES)}", suite)
    budget = raw.get("budget") or {}
    if not isinstance(budget, dict):
        _fail(path, f"{where}.budget", "a mapping of Budget fields", budget)
    fields = {f.name for f in dataclasses.fields(Budget)}
    for key in budget:
        if key not in fields:
            _fail(path, f"{where}.budget.{key}", f"a Budget field ({', '.join(sorted(fields))})", key)
    spec = EvalSpec(
        suite=suite,
        budget=dict(budget),
        data=None if raw.get("data") is None else _file(raw["data"], path, f"{where}.data"),
        recording=_reference(raw.get("recording"), path, f"{where}.recording"),
        layers=_strings(raw.get("layers"), path, f"{where}.layers"),
    )
    if bool(spec.recording) != bool(spec.layers):
        _fail(path, f"{where}.layers", "recording and layers together (brain similarity needs both)", raw.get("layers"))
    try:
        spec.make_budget()
    except (TypeError, ValueError) as err:
        raise RecipeError(f"{path}: field '{where}.budget': {err}") from err
    return spec


def _parse_scale(name: str, raw: Any, path: Path) -> Scale:
    where = f"scales.{name}"
    if not isinstance(raw, dict):
        _fail(path, where, "a mapping", raw)
    _unknown(raw, _SCALE, path, where)
    arms_raw = raw.get("arms")
    if not isinstance(arms_raw, dict) or not arms_raw:
        _fail(path, f"{where}.arms", "a non-empty mapping label -> config", arms_raw)
    arms = []
    for label, spec in arms_raw.items():
        aw = f"{where}.arms.{label}"
        if not isinstance(label, str) or not label.replace("_", "").replace("-", "").replace(".", "").isalnum():
            _fail(path, aw, "a label of letters, digits, '_', '-' or '.'", label)
        if isinstance(spec, str):
            spec = {"config": spec}
        if not isinstance(spec, dict):
            _fail(path, aw, "a config path or {config, overrides, baseline, controls}", spec)
        _unknown(spec, {"config", "overrides", "baseline", "controls"}, path, aw)
        arms.append(Arm(label, _fit_config(spec.get("config"), path, f"{aw}.config"), _strings(spec.get("overrides"), path, f"{aw}.overrides"),
                        spec.get("baseline"), _strings(spec.get("controls"), path, f"{aw}.controls")))
    baseline = raw.get("baseline")
    if baseline not in arms_raw:
        _fail(path, f"{where}.baseline", f"one of the arms {list(arms_raw)}", baseline)
    _check_arm_baselines(arms, baseline, path, where)
    _check_arm_controls(arms, baseline, path, where)
    fetch = _strings(raw.get("fetch"), path, f"{where}.fetch")
    if fetch:
        from neuroreg.data.manifests import ManifestError, find_manifest

        for i, m in enumerate(fetch):
            try:
                find_manifest(m)
            except (ManifestError, KeyError, FileNotFoundError) as err:
                raise RecipeError(f"{path}: field '{where}.fetch[{i}]': {err}") from err
    return Scale(
        name=name,
        description=str(raw.get("description", "")),
        arms=tuple(arms),
        baseline=baseline,
        fetch=fetch,
        overrides=_strings(raw.get("overrides"), path, f"{where}.overrides"),
        eval=_parse_eval(raw.get("eval"), path, f"{where}.eval"),
    )


def _check_arm_baselines(arms: list[Arm], default: str, path: Path, where: str) -> None:
    """Each arm's own ``baseline``: another arm, and one that is not compared with a third."""
    labels = [a.label for a in arms]
    for arm in arms:
        if arm.baseline is None:
            continue
        aw = f"{where}.arms.{arm.label}.baseline"
        if arm.baseline not in labels:
            _fail(path, aw, f"one of the arms {labels}", arm.baseline)
        if arm.baseline == arm.label:
            _fail(path, aw, "another arm (an arm is not compared with itself)", arm.baseline)
    named = {a.baseline for a in arms if a.baseline}
    for arm in arms:
        if arm.baseline is None:
            continue
        if arm.label == default:
            _fail(path, f"{where}.arms.{arm.label}.baseline",
                  f"no baseline for '{arm.label}': it is the scale's baseline, compared with nothing", arm.baseline)
        if arm.label in named:
            users = [a.label for a in arms if a.baseline == arm.label]
            _fail(path, f"{where}.arms.{arm.label}.baseline",
                  f"no baseline for '{arm.label}': it is the baseline of {users}, compared with nothing "
                  "(a baseline cannot have a baseline of its own)", arm.baseline)


def _check_arm_controls(arms: list[Arm], default: str, path: Path, where: str) -> None:
    """Each arm's ``controls``: other arms, listed once, neither its baseline nor a
    baseline arm; an arm with controls is not a baseline arm."""
    labels = [a.label for a in arms]
    baselines = {default} | {a.baseline for a in arms if a.baseline}
    for arm in arms:
        if not arm.controls:
            continue
        aw = f"{where}.arms.{arm.label}.controls"
        if arm.label in baselines:
            _fail(path, aw, f"no controls for '{arm.label}': it is a baseline arm, weighed against nothing", list(arm.controls))
        own_baseline = arm.baseline or default
        for i, c in enumerate(arm.controls):
            if c not in labels:
                _fail(path, f"{aw}[{i}]", f"one of the arms {labels}", c)
            if c == arm.label:
                _fail(path, f"{aw}[{i}]", "another arm (an arm is not its own control)", c)
            if c in baselines:
                _fail(path, f"{aw}[{i}]", f"an arm that is not a baseline arm ('{c}' is one; "
                      f"'{arm.label}' is compared with its baseline '{own_baseline}' anyway)", c)
            if c in arm.controls[:i]:
                _fail(path, f"{aw}[{i}]", "each control once", c)


def experiments_dir() -> Path:
    """The ``experiments/`` folder shipped with neuroreg (next to the package)."""
    return Path(__file__).resolve().parents[2] / "experiments"


def find_recipe(name_or_path: str | os.PathLike) -> Path:
    """The ``recipe.yaml`` of a recipe name (``experiments/<name>/`` in the working
    directory, then the shipped one), a recipe folder or a recipe file.

    Raises:
        RecipeError: nothing found (lists the shipped recipes).
    """
    p = Path(name_or_path)
    for candidate in (p, p / "recipe.yaml", Path("experiments") / p / "recipe.yaml", experiments_dir() / p / "recipe.yaml"):
        if candidate.is_file():
            return candidate.resolve()
    raise RecipeError(f"recipe {str(name_or_path)!r}: expected a recipe name, folder or recipe.yaml, found none; known recipes: {list_recipes()}")


def list_recipes() -> list[str]:
    """Names of the shipped recipes."""
    root = experiments_dir()
    return sorted(p.parent.name for p in root.glob("*/recipe.yaml"))


def load_recipe(name_or_path: str | os.PathLike) -> Recipe:
    """Parse and validate a recipe (see the module docstring).

    Raises:
        RecipeError: unreadable YAML, unknown or missing fields, missing config files (an
            arm's own or one its ``defaults`` list), an unknown suite / Budget field /
            data manifest, an arm's ``baseline`` that is not another arm or names one
            for a baseline arm, an arm's ``controls`` that are not other non-baseline
            arms (or listed for a baseline arm); the message names the file and field.
    """
    path = find_recipe(name_or_path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise RecipeError(f"{path}: {yaml_problem(err) if isinstance(err, yaml.YAMLError) else err}") from err
    if not isinstance(raw, dict):
        _fail(path, "<top>", "a mapping with title, reference, scales", raw)
    _unknown(raw, _TOP, path, "")
    for key in ("title", "reference"):
        if not isinstance(raw.get(key), str) or not raw[key].strip():
            _fail(path, key, "a non-empty string", raw.get(key))
    scales_raw = raw.get("scales")
    if not isinstance(scales_raw, dict) or not scales_raw:
        _fail(path, "scales", f"a mapping with some of {list(SCALES)}", scales_raw)
    for name in scales_raw:
        if name not in SCALES:
            _fail(path, f"scales.{name}", f"one of {list(SCALES)}", name)
    scales = {name: _parse_scale(name, spec, path) for name, spec in scales_raw.items()}
    return Recipe(name=path.parent.name, path=path, title=raw["title"], reference=raw["reference"], scales=scales)
