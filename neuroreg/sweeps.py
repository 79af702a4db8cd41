"""W&B sweep files: load, validate and expand them into the commands wandb's agent runs.

A sweep under ``experiments/sweeps/`` is a wandb sweep configuration (``program``,
``method``, ``metric``, ``parameters``, ``command``) whose parameters are Lightning CLI
keys, e.g. ``model.init_args.regularizers.similarity.init_args.weight``. With a W&B
server it is launched by ``wandb sweep FILE`` and ``wandb agent ENTITY/PROJECT/ID``;
without one, ``neuroreg sweep expand`` prints the command lines the agent would run and
``neuroreg sweep run FILE --index I`` runs one point in this process (a test, a job);
``neuroreg sweep run FILE --all [--launcher slurm …]`` runs every point (or ``--count``
draws) through the launchers of ``neuroreg repro`` (:mod:`neuroreg.repro.launchers`):
``--jobs`` at a time on this machine, or as one SLURM job array (``--array=0-<n-1>``).

This module is an adapter: wandb's ``sweeps`` library searches and wandb's agent code
writes the command line. What it adds is what they lack:

- **Errors that name the file and the field.** The file is checked against the
  ``sweeps`` JSON schema, top-level fields first, then each parameter against the
  schema of its own distribution (``sweeps.config.schema.fill_parameter`` picks it),
  so an error says ``FILE: field 'parameters.w.min': …`` rather than "not valid under
  any of the given schemas". Checked here as well: the ``command`` macros, ``min <
  max`` and the probabilities at every nesting level, a grid's distributions, a bayes
  sweep's metric, and ``null`` values (the agent writes ``None`` as the text ``None``,
  which the Lightning CLI does not read as null). ``run_cap``, ``job``, ``image_uri``
  and ``metric.impute_while_running`` are W&B fields newer than the schema of
  ``sweeps`` 0.2 (0.3 caps numpy below 2).
- **A seeded random draw.** Grid points are ``sweeps.grid_search.grid_search_next_runs``
  in order. A random point is each parameter's ``HyperParameter.ppf`` of one uniform
  draw, as ``HyperParameter.sample`` does, but the draws (one per parameter, in sorted
  name order) come from ``numpy.random.default_rng([seed, index])`` instead of
  Python's unseeded ``random``, so point ``index`` of seed ``seed`` can be rebuilt
  alone. **Bayes** needs the results of earlier runs, which only a W&B server has;
  expanded here, its points are random draws from the same priors.
- **The command.** ``wandb.sdk.launch.sweeps.utils.create_sweep_command`` (``${envvar:NAME}``)
  and ``create_sweep_command_args`` (``${args}`` = ``--name=value``,
  ``${args_no_hyphens}`` = ``name=value``, …, each value written with Python's
  ``str``); an entry that is a whole macro ``${…}`` becomes its list, as in
  ``wandb_agent.Agent._command_run``, with ``${env}`` = ``/usr/bin/env`` (nothing on
  Windows), ``${interpreter}`` = ``python`` and ``${program}`` = the ``program`` field.
  ``${args_json_file}`` and ``${args_dict}`` are not supported.

A point is ``{top-level name: value}``: the plain parameters, then the nested blocks
(one dict each), as ``HyperParameterSet.to_config`` makes it; its flags follow that order.

Example:
    >>> sweep = Sweep.from_dict({"method": "grid", "parameters": {"seed_everything": {"values": [0, 1]},
    ...     "model.init_args.lr": {"values": [0.01, 0.1]}}, "command": ["${env}", "neuroreg", "fit", "${args}"]})
    >>> sweep.size, sweep.point(1)
    (4, {'model.init_args.lr': 0.01, 'seed_everything': 1})
    >>> sweep.cli_args(sweep.point(1))
    ['fit', '--model.init_args.lr=0.01', '--seed_everything=1']
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import re
import shlex
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache, cached_property
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import yaml
from wandb.sdk.launch.sweeps.utils import (
    DEFAULT_SWEEP_COMMAND,
    SWEEP_COMMAND_ENV_VAR_REGEX,
    create_sweep_command,
    create_sweep_command_args,
)

from neuroreg.io import yaml_problem

with warnings.catch_warnings():  # sweeps 0.2 declares its pydantic model in the v1 style
    warnings.filterwarnings("ignore", message=r"(?s).*(class-based `config`|Valid config keys have changed)")
    from sweeps.config.schema import (
        dereferenced_sweep_config_jsonschema,
        fill_parameter,
        format_checker,
        sweep_config_jsonschema,
        validate_categorical_prob,
    )
    from sweeps.grid_search import grid_search_next_runs
    from sweeps.params import PARAM_DEPRECATION_MAP, HyperParameter, HyperParameterSet

METHODS = ("grid", "random", "bayes")
#: W&B sweep fields newer than the schema of sweeps 0.2
NEWER_FIELDS = {
    "run_cap": {"type": "integer", "exclusiveMinimum": 0},
    "job": {"type": "string"},
    "image_uri": {"type": "string"},
}
NEWER_METRIC_FIELDS = {"impute_while_running": {"type": "string", "enum": ["latest", "best", "worst", "false"]}}
#: kinds of ``HyperParameter`` a grid accepts (those ``grid_search_next_runs`` accepts)
GRID_KINDS = (HyperParameter.CONSTANT, HyperParameter.CATEGORICAL, HyperParameter.INT_UNIFORM, HyperParameter.Q_UNIFORM)
#: macros that name things the agent makes for its own run
UNSUPPORTED_MACROS = {
    "args_json_file": "it names a file the agent writes for its run id",
    "args_dict": "wandb's agent expands it into the parameter names alone",
}


class SweepError(ValueError):
    """A sweep file that wandb would reject or that neuroreg cannot run."""


# ---------------------------------------------------------------------- validation
def _found(x: Any) -> str:
    """How a found value is shown in an error, with a hint for YAML 1.1's exponent trap."""
    text = repr(x)
    if isinstance(x, str):
        try:
            float(x)
        except ValueError:
            return text
        text += " (text: YAML 1.1 reads a number with an exponent but no '.' as a string; write e.g. 1.0e-5)"
    return text


def _field(where: str, path: Any) -> str:
    """``where`` followed by a schema error's path: ``metric.goal``, ``command[2]``."""
    for p in path:
        where = f"{where}[{p}]" if isinstance(p, int) else f"{where}.{p}" if where else str(p)
    return where


def _explain(error: jsonschema.ValidationError, where: str, takes: str = "") -> tuple[str, str]:
    """``(field, what was expected and found)`` of a schema error at ``where``.

    Args:
        error: from a validator run on the value at ``where``.
        where: the dotted field of that value (``''`` for the whole file).
        takes: for a parameter, ``"distribution NAME"``; unknown keys are then named on
            the parameter rather than as fields of their own.
    """
    if error.context:  # anyOf / oneOf: the error of the alternative that came closest
        return _explain(jsonschema.exceptions.best_match(error.context), where, takes)
    here, kind, value, found = _field(where, error.absolute_path), error.validator, error.validator_value, error.instance
    if kind == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(set(found) - set(allowed))
        if takes:
            return here, f"{takes} takes {', '.join(allowed)}, found unexpected {extra}"
        what = "a wandb sweep field" if not here else f"a field of '{here}'"
        return _field(here, [extra[0]]), f"not {what}; expected one of {', '.join(allowed)}"
    if kind == "required":
        missing = [k for k in value if k not in found]
        return _field(here, [missing[0]]), "missing" + (f" ({takes} needs {', '.join(value)})" if takes else "")
    if kind == "enum":
        return here, f"expected one of {', '.join(map(str, value))}, found {found!r}"
    if kind in ("type", "format"):
        names = {"number": "a number", "integer": "an integer", "float": "a float", "string": "a string",
                 "array": "a list", "object": "a mapping", "boolean": "true or false"}
        return here, f"expected {names.get(value, value)}, found {_found(found)}"
    if kind in ("exclusiveMinimum", "minimum"):
        op = ">" if kind == "exclusiveMinimum" else ">="
        key = error.absolute_path[-1] if error.absolute_path else "it"
        return here, f"{takes + ' ' if takes else ''}needs {key} {op} {value:g}, found {found!r}"
    if kind in ("minItems", "minProperties"):
        return here, f"expected a non-empty {'list' if kind == 'minItems' else 'mapping'}, found {found!r}"
    if kind == "pattern":
        return here, f"names must match {value}, found {found!r}"
    return here, error.message


def _raise_first(source: str, validator: jsonschema.Draft7Validator, value: Any, where: str, takes: str = "") -> None:
    errors = sorted(validator.iter_errors(value), key=lambda e: [str(p) for p in e.absolute_path])
    if errors:
        here, text = _explain(errors[0], where, takes)
        raise SweepError(f"{source}: field '{here}': {text}")


@cache
def _file_validator() -> jsonschema.Draft7Validator:
    """sweeps' schema of a whole file, with W&B's newer fields; ``parameters`` is checked leaf by leaf."""
    schema = copy.deepcopy(sweep_config_jsonschema)
    props = schema["properties"]
    for name, spec in NEWER_FIELDS.items():
        props.setdefault(name, spec)
    metric = schema["definitions"]["metric"] if "$ref" in props["metric"] else props["metric"]
    for name, spec in NEWER_METRIC_FIELDS.items():
        metric["properties"].setdefault(name, spec)
    props["parameters"] = True
    return jsonschema.Draft7Validator(schema, format_checker=format_checker)


@cache
def _block_validator() -> jsonschema.Draft7Validator:
    """sweeps' schema of one ``parameters`` block, its entries left to :func:`_leaf`."""
    block = {k: v for k, v in sweep_config_jsonschema["definitions"]["parameters"].items() if k != "additionalProperties"}
    return jsonschema.Draft7Validator(block, format_checker=format_checker)


@cache
def _distributions() -> dict[str, list[dict]]:
    """Distribution name -> its schemas (one per accepted spelling), from sweeps' schema."""
    out: dict[str, list[dict]] = {}
    for ref in sweep_config_jsonschema["definitions"]["parameter"]["anyOf"]:
        definition = dereferenced_sweep_config_jsonschema["definitions"][ref["$ref"].rsplit("/", 1)[-1]]
        for branch in definition.get("anyOf", [definition]):
            if "distribution" in branch["properties"]:
                out.setdefault(branch["properties"]["distribution"]["enum"][0], []).append(branch)
    return out


def _find_none(value: Any, where: str = "") -> str | None:
    """Path (``''`` for the value itself) of the first ``None`` inside ``value``, else ``None``."""
    if value is None:
        return where
    items = value.items() if isinstance(value, Mapping) else enumerate(value) if isinstance(value, list) else ()
    for key, item in items:
        hit = _find_none(item, f"{where}[{key!r}]")
        if hit is not None:
            return hit
    return None


def _leaf(source: str, here: str, spec: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """One parameter's ``(HyperParameter kind, spec with sweeps' defaults filled in)``."""
    for key in ("value", "values"):
        hit = _find_none(spec.get(key, 0))
        if hit is not None:
            raise SweepError(
                f"{source}: field '{here}.{key}{hit}': found null; wandb's agent passes None as the text "
                "'None', which the Lightning CLI does not read as null; leave the key out of the sweep instead"
            )
    dist = spec.get("distribution")
    if dist is not None and dist not in _distributions():
        raise SweepError(f"{source}: field '{here}.distribution': expected one of {', '.join(_distributions())}, found {dist!r}")
    try:
        filled = fill_parameter(here, spec)
    except ValueError:  # sweeps' min/max check
        raise SweepError(f"{source}: field '{here}': expected min < max, found min {spec['min']!r}, max {spec['max']!r}") from None
    if filled is None:  # no schema fits: explain with the schema of the distribution meant
        meant = [(name, branch) for name, branches in _distributions().items() for branch in branches
                 if (name == dist if dist is not None else
                     "distribution" not in branch["required"] and set(branch["required"]) <= set(spec))]
        if not meant:
            raise SweepError(
                f"{source}: field '{here}': expected 'value', 'values', 'min' and 'max', 'distribution' "
                f"or 'parameters', found fields {sorted(spec)}"
            )
        runs = [(name, jsonschema.Draft7Validator(branch, format_checker=format_checker)) for name, branch in meant]
        name, validator = min(runs, key=lambda r: len(list(r[1].iter_errors(spec))))
        _raise_first(source, validator, spec, here, takes=f"distribution {name}")
        raise AssertionError(f"{here}: sweeps rejects {spec} but no schema of {name} does")
    kind, filled_spec = filled
    if kind in PARAM_DEPRECATION_MAP:
        raise SweepError(f"{source}: field '{here}.distribution': {PARAM_DEPRECATION_MAP[kind]} (deprecated; wandb rejects it)")
    try:
        validate_categorical_prob(here, filled_spec)
    except ValueError as err:
        raise SweepError(f"{source}: field '{here}.probabilities': {err}") from None
    return kind, filled_spec


def _leaves(source: str, where: str, block: Any, prefix: str = "") -> dict[str, tuple[str, dict[str, Any]]]:
    """Dotted name -> :func:`_leaf` of every parameter under ``block``, in sweeps' (sorted) order."""
    _raise_first(source, _block_validator(), block, where)
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for name in sorted(block):
        spec, here = block[name], f"{where}.{name}"
        if not isinstance(spec, Mapping):
            raise SweepError(
                f"{source}: field '{here}': expected a mapping with 'value', 'values', 'min'/'max', "
                f"'distribution' or 'parameters', found {spec!r}"
            )
        if "parameters" in spec:
            extra = sorted(set(spec) - {"parameters"})
            if extra:
                raise SweepError(f"{source}: field '{here}': a nested block holds only 'parameters', found also {extra}")
            out.update(_leaves(source, f"{here}.parameters", spec["parameters"], f"{prefix}{name}."))
        else:
            out[prefix + name] = _leaf(source, here, dict(spec))
    return out


def _check_command(source: str, command: list, program: str | None) -> None:
    """Every entry a string; ``${…}`` only as a whole entry naming a macro the agent knows."""
    macros = ["env", "interpreter", "program", *(m for m in create_sweep_command_args({"args": {}}) if m not in UNSUPPORTED_MACROS)]
    for i, entry in enumerate(command):
        if isinstance(entry, (Mapping, list)) or entry is None:
            raise SweepError(f"{source}: field 'command[{i}]': expected a string, found {entry!r}")
        if "${" not in SWEEP_COMMAND_ENV_VAR_REGEX.sub("", str(entry)):
            continue
        m = re.fullmatch(r"\$\{([^}]*)\}", str(entry))
        name = m.group(1) if m else None
        if name in UNSUPPORTED_MACROS:
            raise SweepError(f"{source}: field 'command[{i}]': ${{{name}}} is not supported ({UNSUPPORTED_MACROS[name]})")
        if name not in macros:
            raise SweepError(
                f"{source}: field 'command[{i}]': expected a whole-entry macro "
                f"{', '.join('${' + k + '}' for k in macros)} or ${{envvar:NAME}}, found {entry!r}"
            )
        if name == "program" and program is None:
            raise SweepError(f"{source}: field 'program': command[{i}] uses ${{program}}, but the file sets no program")


# ---------------------------------------------------------------------- expansion
def agent_args(point: Mapping[str, Any]) -> dict[str, Any]:
    """The argument forms wandb's agent builds from a run's parameters
    (``create_sweep_command_args``: ``args``, ``args_no_hyphens``, …), in ``point``'s order."""
    return create_sweep_command_args({"args": {k: {"value": v} for k, v in point.items()}})


def _native(x: Any) -> Any:
    """numpy scalars (what ``HyperParameter.ppf`` returns) as Python ``int`` / ``float``."""
    return x.item() if isinstance(x, np.generic) else x


def _point(run_config: Mapping[str, Any]) -> dict[str, Any]:
    """A point from a sweeps run config (``{name: {"value": v}}``)."""
    return {name: entry["value"] for name, entry in run_config.items()}


def _shipped(path: str) -> str:
    """A relative config path: as given when it exists from here, else next to neuroreg's
    shipped ``experiments/`` when it exists there, else as given."""
    p = Path(path)
    if p.is_absolute() or p.exists():
        return path
    shipped = Path(__file__).resolve().parents[1] / p
    return str(shipped) if shipped.exists() else path


@dataclass(frozen=True)
class Sweep:
    """A validated wandb sweep file.

    Args:
        source: where it came from (named in errors).
        method: ``grid``, ``random`` or ``bayes``.
        parameters: dotted name (``a.b`` for ``b`` nested in ``a``) -> spec with sweeps'
            defaults filled in (``distribution`` named), in sweeps' (sorted) order.
        template: the ``command`` field, the template of every run's command (wandb's
            default when the file has none).
        program: the ``program`` field, if any.
        metric: the ``metric`` field (``goal`` filled in), if any.
        config: the whole file as read.
    """

    source: str
    method: str
    parameters: dict[str, dict[str, Any]] = field(hash=False)
    template: tuple[str, ...]
    program: str | None = None
    metric: dict[str, Any] | None = field(default=None, hash=False)
    config: dict[str, Any] = field(default_factory=dict, hash=False)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], source: str = "<sweep>") -> Sweep:
        """Validate a sweep configuration.

        Args:
            config: the parsed sweep file.
            source: its name in error messages (the file path).

        Raises:
            SweepError: a field that is unknown, missing, of the wrong type or value,
                naming ``source`` and the field.
        """
        if not isinstance(config, Mapping):
            raise SweepError(f"{source}: expected a mapping of sweep fields, found {type(config).__name__}")
        config = dict(config)
        method = config.get("method")
        if method not in METHODS:
            raise SweepError(f"{source}: field 'method': expected one of {', '.join(METHODS)}, found {method!r}")
        _raise_first(source, _file_validator(), config, "")
        metric = config.get("metric")
        if metric is None and method == "bayes":
            raise SweepError(f"{source}: field 'metric': a bayes sweep needs a metric to model, found none")
        program = config.get("program")
        command = config.get("command") or list(DEFAULT_SWEEP_COMMAND)  # as the agent does
        _check_command(source, command, program)
        if "parameters" not in config:
            raise SweepError(f"{source}: field 'parameters': missing; expected the mapping of swept Lightning CLI keys")
        leaves = _leaves(source, "parameters", config["parameters"])
        if method == "grid":
            for name, (kind, spec) in leaves.items():
                if kind not in GRID_KINDS:
                    raise SweepError(
                        f"{source}: field 'parameters.{name}': a grid takes constant, categorical, int_uniform or "
                        f"q_uniform parameters, found {spec['distribution']}"
                    )
        return cls(source=source, method=method, parameters={name: spec for name, (_, spec) in leaves.items()},
                   template=tuple(str(c) for c in command), program=program,
                   metric=None if metric is None else {"goal": "minimize", **metric}, config=config)

    # ------------------------------------------------------------------ points
    @cached_property
    def _grid(self) -> list[dict[str, Any]]:
        runs = grid_search_next_runs([], self.config, n=sys.maxsize)
        return [_point(run.config) for run in runs if run is not None]

    @cached_property
    def _hyperparameters(self) -> HyperParameterSet:
        return HyperParameterSet.from_config(self.config["parameters"])

    @property
    def size(self) -> int | None:
        """Points in the grid; ``None`` for random and bayes sweeps (they never end)."""
        return len(self._grid) if self.method == "grid" else None

    def point(self, index: int, seed: int = 0) -> dict[str, Any]:
        """The parameters of point ``index``: top-level name -> value (a dict for a nested block).

        Args:
            index: 0-based; for a grid, ``0 <= index < size``.
            seed: random and bayes sweeps: point ``index`` is drawn from
                ``numpy.random.default_rng([seed, index])``. A grid ignores it.

        Raises:
            IndexError: ``index`` outside the grid, or negative.
        """
        if isinstance(index, bool) or not isinstance(index, (int, np.integer)) or index < 0:
            raise IndexError(f"{self.source}: point index: expected an integer >= 0, found {index!r}")
        if self.method == "grid":
            if index >= self.size:
                raise IndexError(f"{self.source}: point index: expected 0..{self.size - 1} (the grid has {self.size} points), found {index}")
            return copy.deepcopy(self._grid[index])
        rng = np.random.default_rng([int(seed), int(index)])
        params = self._hyperparameters
        for param in params:
            param.value = _native(param.ppf(float(rng.random())))
        return _point(params.to_config())

    def points(self, n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
        """Points ``0..n-1`` (a grid: all of them when ``n`` is None, at most ``size``).

        Raises:
            ValueError: ``n`` is None for a random or bayes sweep.
        """
        if self.method == "grid":
            return copy.deepcopy(self._grid[:n])
        if n is None:
            raise ValueError(f"{self.source}: a {self.method} sweep has no end; pass the number of points n")
        return [self.point(i, seed) for i in range(n)]

    # ------------------------------------------------------------------ commands
    def command(self, point: Mapping[str, Any]) -> list[str]:
        """The argv wandb's agent would run for ``point`` (see the module docstring).

        Args:
            point: as returned by :meth:`point`.
        """
        macros = {
            **agent_args(point),
            "interpreter": ["python"],
            "program": [self.program],
            "env": [] if platform.system() == "Windows" else ["/usr/bin/env"],
        }
        argv: list[str] = []
        for entry in create_sweep_command(list(self.template)):
            argv += macros[entry[2:-1]] if entry.startswith("${") and entry.endswith("}") else [entry]
        return argv

    def cli_args(self, point: Mapping[str, Any]) -> list[str]:
        """The arguments after ``neuroreg`` in :meth:`command`, ready for :func:`neuroreg.cli.main`.

        A leading ``/usr/bin/env`` is dropped. A relative ``--config`` / ``-c`` path
        that does not exist from the working directory is taken from next to
        neuroreg's shipped ``experiments/`` (the rule of
        :class:`~neuroreg.targets.twin.TwinTargets`), so a point runs from any folder.

        Raises:
            SweepError: the command does not run ``neuroreg`` (or ``python -m neuroreg.cli``).
        """
        argv = self.command(point)
        if argv[:1] in (["/usr/bin/env"], ["env"]):
            argv = argv[1:]
        if argv[:1] == ["neuroreg"]:
            rest = argv[1:]
        elif len(argv) >= 3 and Path(argv[0]).name.startswith("python") and argv[1:3] == ["-m", "neuroreg.cli"]:
            rest = argv[3:]
        else:
            raise SweepError(
                f"{self.source}: field 'command': expected a command that runs neuroreg "
                f"('${{env}} neuroreg …' or 'python -m neuroreg.cli …'), found {shlex.join(argv)!r}"
            )
        out: list[str] = []
        for i, a in enumerate(rest):
            if i > 0 and rest[i - 1] in ("--config", "-c"):
                a = _shipped(a)
            elif a.startswith("--config="):
                a = "--config=" + _shipped(a[len("--config="):])
            out.append(a)
        return out


def load_sweep(path: str | os.PathLike) -> Sweep:
    """Read and validate a wandb sweep file (YAML, read as wandb reads it: ``yaml.safe_load``).

    Args:
        path: the sweep file.

    Returns:
        The validated :class:`Sweep`.

    Raises:
        FileNotFoundError: no such file.
        SweepError: not YAML, or a field wandb would reject or neuroreg cannot run
            (the message names the file and the field).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: sweep file not found")
    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise SweepError(f"{path}: {yaml_problem(err)}") from err
    return Sweep.from_dict(config, source=str(path))


# ---------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="neuroreg sweep",
        description="Expand a wandb sweep file into the commands its agent would run, or run one point here.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    ex = sub.add_parser("expand", help="print the command line of one point, or of all points (shell-quoted, one per line)")
    ex.add_argument("file", type=Path)
    which = ex.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, help="the point to print (0-based)")
    which.add_argument("--all", action="store_true", help="every point of a grid (the default), or --count draws")
    ex.add_argument("--count", type=int, help="with --all: the number of points (required for random/bayes sweeps)")
    ex.add_argument("--seed", type=int, default=0, help="seed of random/bayes draws (default 0)")
    run = sub.add_parser("run", help="run one point in this process, or points through a launcher: this machine's cores "
                                      "or a SLURM array (arguments after -- are appended)")
    run.add_argument("file", type=Path)
    points = run.add_mutually_exclusive_group(required=True)
    points.add_argument("--index", type=int, help="the point to run (0-based), e.g. $SLURM_ARRAY_TASK_ID")
    points.add_argument("--all", action="store_true", help="every point of a grid, or --count draws, as launcher jobs")
    run.add_argument("--count", type=int, help="with --all: the number of points (required for random/bayes sweeps)")
    run.add_argument("--seed", type=int, default=0, help="seed of random/bayes draws (default 0)")
    run.add_argument("--out", type=Path, help="with --all or --launcher slurm: the points' folders and logs "
                                              "(default runs/sweeps/<file name>)")
    run.add_argument("--jobs", type=int, default=1, help="--all --launcher local: points at a time (default 1)")
    run.add_argument("--parallel", type=int, help="--launcher slurm: array tasks at a time (sbatch --array=…%%N)")
    run.add_argument("--scale", default="mini", choices=("mini", "real", "full"),
                     help="--launcher slurm: the recipe scale whose default resources a job asks for (default mini)")
    from neuroreg.repro.launchers import add_launcher_arguments

    add_launcher_arguments(run)
    return p


def _run_point(cli_args: list[str]):
    def run(stage) -> dict[str, Any]:
        from neuroreg.cli import main as neuroreg_main

        print(f"neuroreg sweep: {stage.name}: neuroreg {shlex.join(cli_args)}", flush=True)
        status = neuroreg_main(cli_args)
        if status:
            raise RuntimeError(f"neuroreg {shlex.join(cli_args)} exited with status {status}")
        return {"argv": cli_args}

    return run


def point_stages(sweep: Sweep, indices: list[int], seed: int, extra: list[str], out: Path) -> list:
    """One :class:`~neuroreg.repro.stages.Stage` per point (``OUT/point<i>-<key>/``, done once
    its fit returned 0), for the launchers of :mod:`neuroreg.repro.launchers`."""
    from neuroreg.repro.stages import Stage, content_key

    stages = []
    for i in indices:
        cli_args = sweep.cli_args(sweep.point(i, seed)) + extra
        key = content_key("sweep", cli_args)
        stages.append(Stage(f"point {i}", "sweep", key, Path(out).resolve() / f"point{i}-{key}", _run_point(cli_args),
                            info={"index": i, "argv": cli_args}))
    return stages


def _launch(args: argparse.Namespace, sweep: Sweep, extra: list[str]) -> int:
    """``run --all`` or ``run --launcher slurm``: the points as launcher jobs."""
    from neuroreg.repro.launchers import LOGS, SUBMITIT, LocalLauncher, Progress, SlurmLauncher, resources_from

    if args.index is not None:
        indices = [args.index]
    else:
        if sweep.method != "grid" and args.count is None:
            raise SweepError(f"{args.file}: a {sweep.method} sweep has no end; pass --count N (or --index I)")
        indices = list(range(args.count if args.count is not None else sweep.size))
    out = args.out or Path("runs") / "sweeps" / args.file.stem
    stages = point_stages(sweep, indices, args.seed, extra, out)
    if args.launcher == "slurm":
        try:
            resources = resources_from(args, args.scale)
        except ValueError as err:
            raise SweepError(str(err)) from err
        launcher = SlurmLauncher(Path(out) / LOGS / SUBMITIT, Path(out) / LOGS, resources, setup=args.slurm_setup)
        try:
            ids = launcher.submit_array(stages, parallel=args.parallel, echo=lambda m: print(f"neuroreg sweep: {m}"))
        except (RuntimeError, OSError) as err:
            print(f"neuroreg sweep: error: cannot submit to SLURM: {err}", file=sys.stderr)
            return 1
        print(f"neuroreg sweep: {len(ids)} point(s) of {args.file} submitted as one array; {len(stages) - len(ids)} already done")
        return 0
    if args.jobs < 1:
        raise SweepError(f"--jobs: expected an integer >= 1, found {args.jobs}")
    launcher = LocalLauncher(Path(out) / LOGS / SUBMITIT, Path(out) / LOGS, jobs=args.jobs,
                             threads=max(1, (os.cpu_count() or 1) // args.jobs))
    progress = Progress(stages, args.jobs, prefix="neuroreg sweep")
    try:
        left = launcher.run(stages, progress)
    finally:
        progress.close()
    print(f"neuroreg sweep: {len(stages) - len(left)} of {len(stages)} point(s) done; folders under {out}")
    return 1 if left else 0


def main(argv: list[str]) -> int:
    """``neuroreg sweep expand|run``; returns the exit status (2 on a bad sweep file or index)."""
    argv = list(argv)
    extra: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, extra = argv[:cut], argv[cut + 1:]
    args = _parser().parse_args(argv)
    if extra and args.action != "run":
        print("neuroreg sweep: error: arguments after -- are for 'run' only", file=sys.stderr)
        return 2
    try:
        sweep = load_sweep(args.file)
        if args.action == "run" and (args.all or args.launcher == "slurm"):
            return _launch(args, sweep, extra)
        if args.action == "run":
            cli_args = sweep.cli_args(sweep.point(args.index, args.seed)) + extra
        elif args.index is not None:
            commands = [sweep.command(sweep.point(args.index, args.seed))]
        else:
            if sweep.method != "grid" and args.count is None:
                raise SweepError(f"{args.file}: a {sweep.method} sweep has no end; pass --count N (or --index I)")
            commands = [sweep.command(p) for p in sweep.points(args.count, args.seed)]
    except (SweepError, FileNotFoundError, IndexError) as err:
        print(f"neuroreg sweep: error: {err}", file=sys.stderr)
        return 2
    if args.action == "expand":
        for c in commands:
            print(shlex.join(c))
        return 0
    from neuroreg.cli import main as neuroreg_main

    print(f"neuroreg sweep: point {args.index} of {args.file}: neuroreg {shlex.join(cli_args)}", file=sys.stderr)
    return neuroreg_main(cli_args)
