"""W&B sweep files: load, validate and expand them into the commands wandb's agent runs.

A sweep under ``experiments/sweeps/`` is a wandb sweep configuration (``program``,
``method``, ``metric``, ``parameters``, ``command``) whose parameters are Lightning CLI
keys, e.g. ``model.init_args.regularizers.similarity.init_args.weight``. With a W&B
server it is launched by ``wandb sweep FILE`` and ``wandb agent ENTITY/PROJECT/ID``;
without one, ``neuroreg sweep expand`` prints the command lines the agent would run and
``neuroreg sweep run FILE --index I`` runs one point in this process (a SLURM array, a
test).

Expansion follows wandb's own code, so a point runs here as it runs under the agent:

- **Parameters** (wandb's ``sweeps`` library, ``HyperParameterSet.from_config``) are
  visited in sorted name order, nested ``parameters`` blocks sorted at each level. A
  nested block becomes one dict-valued top-level parameter, its keys sorted. A point
  (a run config, ``HyperParameterSet.to_config``) lists the plain parameters, then the
  nested blocks, each in sorted order; its flags follow that order.
- **Grid** (``grid_search_next_runs``): the Cartesian product of every parameter's
  values, the first parameter (in that order) varying slowest; ``int_uniform`` is
  ``min..max`` inclusive, ``q_uniform`` is ``numpy.arange(min, max, q)`` (``max``
  excluded); repeated values count once.
- **Random** draws each parameter independently from its distribution (the formulas
  of ``HyperParameter.ppf``: ``q_*`` rounds to a multiple of ``q`` and is an ``int``
  when ``q`` is one). wandb's server draws without a seed; here point ``i`` of seed
  ``s`` is drawn from ``numpy.random.default_rng([s, i])``, so any point can be
  rebuilt alone. **Bayes** needs the results of earlier runs, which only a W&B server
  has; expanded here, its points are random draws from the same priors.
- **Command** (wandb's ``Agent._command_run`` and
  ``wandb.sdk.launch.sweeps.utils.create_sweep_command_args``): ``${envvar:NAME}`` is
  replaced inside any entry by ``$NAME`` (or ``NAME`` when unset); an entry that is a
  whole macro ``${…}`` is replaced by a list, any other entry is kept. Per top-level
  parameter ``name`` with value ``v`` (formatted with Python's ``str``, so ``True``,
  ``0.001``, ``1e-05``, ``['layer1', 'layer2']``, ``{'lr': 0.01}``):

  - ``${env}``: ``/usr/bin/env`` (nothing on Windows); ``${interpreter}``: ``python``;
    ``${program}``: the ``program`` field;
  - ``${args}``: ``--name=v``; ``${args_no_hyphens}``: ``name=v``;
    ``${args_no_equals}``: ``--name``, ``v``; ``${args_append_hydra}``: ``+name=v``;
    ``${args_override_hydra}``: ``++name=v``;
  - ``${args_no_boolean_flags}``: ``--name`` for ``True``, nothing for ``False``, else
    ``--name=v``;
  - ``${args_json}``: one entry, ``json.dumps({name: v, …})``.

  The Lightning CLI reads ``v`` as YAML, so these forms reach the config as the
  values written in the sweep file. ``None`` cannot: the agent writes it as the text
  ``None``, so a ``null`` value is rejected when the file is loaded. ``${args_json_file}``
  (a file the agent names after its run id) is not supported.

Example:
    >>> sweep = load_sweep("experiments/sweeps/similarity_weight.yaml")  # doctest: +SKIP
    >>> sweep.command(sweep.point(0))  # doctest: +SKIP
    ['/usr/bin/env', 'neuroreg', 'fit', '--config', 'experiments/quickstart.yaml', ...]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

#: wandb's default command, used when a sweep file has none
DEFAULT_COMMAND = ("${env}", "${interpreter}", "${program}", "${args}")

#: top-level fields of wandb's sweep schema (``sweeps/config/schema.json``)
SWEEP_FIELDS = (
    "apiVersion", "command", "controller", "description", "early_terminate", "entity", "image_uri", "job",
    "kind", "method", "metric", "metrics", "name", "parameters", "program", "project", "run_cap", "scheduler",
)
METHODS = ("grid", "random", "bayes")
GOALS = ("minimize", "maximize")
METRIC_FIELDS = ("name", "goal", "target", "impute", "impute_while_running")

_ARG_MACROS = (
    "args", "args_no_equals", "args_no_hyphens", "args_no_boolean_flags", "args_json",
    "args_append_hydra", "args_override_hydra",
)
#: macros an entry of ``command`` may be
MACROS = ("env", "interpreter", "program", *_ARG_MACROS)
_UNSUPPORTED_MACROS = {
    "args_json_file": "it names a file the agent writes for its run id",
    "args_dict": "wandb's agent expands it into the parameter names alone",
}
_ENVVAR = re.compile(r"\$\{envvar\:([A-Z0-9_]*)\}")  # wandb's SWEEP_COMMAND_ENV_VAR_REGEX
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")  # wandb's parameter name pattern

#: distribution -> (required fields, optional fields with defaults), as in wandb's schema
DISTRIBUTIONS: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "constant": (("value",), {}),
    "categorical": (("values",), {}),
    "categorical_w_probabilities": (("values", "probabilities"), {}),
    "int_uniform": (("min", "max"), {}),
    "uniform": (("min", "max"), {}),
    "q_uniform": (("min", "max"), {"q": 1.0}),
    "log_uniform_values": (("min", "max"), {}),
    "inv_log_uniform_values": (("min", "max"), {}),
    "q_log_uniform_values": (("min", "max"), {"q": 1.0}),
    "normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "log_normal": ((), {"mu": 0.0, "sigma": 1.0}),
    "q_log_normal": ((), {"mu": 0.0, "sigma": 1.0, "q": 1.0}),
    "beta": ((), {"a": 1.0, "b": 1.0}),
    "q_beta": ((), {"a": 1.0, "b": 1.0, "q": 1.0}),
}
#: distributions wandb's server rejects as deprecated (min/max are base-e exponents)
DEPRECATED = {"log_uniform": "log_uniform_values", "inv_log_uniform": "inv_log_uniform_values",
              "q_log_uniform": "q_log_uniform_values"}
#: distributions a grid accepts
GRID_DISTRIBUTIONS = ("constant", "categorical", "int_uniform", "q_uniform")


class SweepError(ValueError):
    """A sweep file that wandb would reject or that neuroreg cannot run."""


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


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


def _find_none(value: Any, where: str = "") -> str | None:
    """Path (``''`` for the value itself) of the first ``None`` inside ``value``, else ``None``."""
    if value is None:
        return where
    if isinstance(value, Mapping):
        items = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        hit = _find_none(item, f"{where}[{key!r}]")
        if hit is not None:
            return hit
    return None


def _native(x: Any) -> Any:
    """numpy scalars as Python ``int`` / ``float`` (their ``str`` inside lists differs)."""
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, np.floating):
        return float(x)
    return x


def _quantize(r: float, q: float) -> float | int:
    """wandb's ``np.round(r / q) * q``, an ``int`` when ``q`` is one."""
    v = np.round(r / q) * q
    return int(v) if isinstance(q, int) else float(v)


def _value_key(value: Any) -> str:
    """wandb's identity of a grid value (``yaml_hash`` without the md5)."""
    return yaml.dump(value, default_flow_style=True, sort_keys=True)


@dataclass(frozen=True)
class Parameter:
    """One searched (or constant) leaf of a sweep's ``parameters``.

    Args:
        path: the top-level parameter name, then the keys of nested ``parameters`` blocks.
        distribution: a key of :data:`DISTRIBUTIONS`.
        spec: its fields, defaults filled in.
    """

    path: tuple[str, ...]
    distribution: str
    spec: dict[str, Any] = field(hash=False)

    @property
    def name(self) -> str:
        """The dotted display name (``a.b`` for ``b`` nested in ``a``)."""
        return ".".join(self.path)

    def grid_values(self) -> list[Any]:
        """The values a grid visits, in order, repeats dropped.

        Raises:
            SweepError: the distribution is not one a grid accepts.
        """
        s = self.spec
        if self.distribution == "constant":
            values = [s["value"]]
        elif self.distribution == "categorical":
            values = list(s["values"])
        elif self.distribution == "int_uniform":
            values = list(range(s["min"], s["max"] + 1))
        elif self.distribution == "q_uniform":
            values = np.arange(s["min"], s["max"], s["q"]).tolist()
        else:
            raise SweepError(f"parameter {self.name}: a grid takes {', '.join(GRID_DISTRIBUTIONS)}, found {self.distribution}")
        seen, out = set(), []
        for v in values:
            k = _value_key(v)
            if k not in seen:
                seen.add(k)
                out.append(v)
        return out

    def sample(self, rng: np.random.Generator) -> Any:
        """One random draw (wandb's ``HyperParameter.ppf`` of a uniform draw).

        Args:
            rng: the generator to draw from.

        Returns:
            A Python scalar (or the chosen value of a categorical).
        """
        s, d = self.spec, self.distribution
        u = float(rng.random())
        if d == "constant":
            return s["value"]
        if d == "categorical":
            return s["values"][min(int(u * len(s["values"])), len(s["values"]) - 1)]
        if d == "categorical_w_probabilities":
            cdf = np.cumsum(s["probabilities"])
            return s["values"][int(np.argmin(u >= cdf))]
        if d == "int_uniform":
            return min(s["min"] + int(u * (s["max"] - s["min"] + 1)), s["max"])
        if d in ("uniform", "q_uniform"):
            r = s["min"] + u * (s["max"] - s["min"])
        elif d in ("log_uniform_values", "q_log_uniform_values"):
            lo, hi = math.log(s["min"]), math.log(s["max"])
            r = math.exp(lo + u * (hi - lo))
        elif d == "inv_log_uniform_values":
            lo, hi = -math.log(s["max"]), -math.log(s["min"])
            r = math.exp(-(lo + (1.0 - u) * (hi - lo)))
        elif d in ("normal", "q_normal"):
            r = s["mu"] + s["sigma"] * float(rng.standard_normal())
        elif d in ("log_normal", "q_log_normal"):
            r = math.exp(s["mu"] + s["sigma"] * float(rng.standard_normal()))
        elif d in ("beta", "q_beta"):
            r = float(rng.beta(s["a"], s["b"]))
        else:  # every key of DISTRIBUTIONS is handled above
            raise AssertionError(d)
        return _quantize(r, s["q"]) if d.startswith("q_") else float(r)


def _parse_parameters(source: str, where: str, block: Any, prefix: tuple[str, ...]) -> list[Parameter]:
    """The leaves of a ``parameters`` block, sorted as wandb visits them."""
    if not isinstance(block, Mapping) or not block:
        raise SweepError(f"{source}: field '{where}': expected a non-empty mapping of parameter names, found {block!r}")
    for name in block:
        if not isinstance(name, str) or not _NAME.match(name):
            raise SweepError(f"{source}: field '{where}': parameter names must match {_NAME.pattern}, found {name!r}")
    out: list[Parameter] = []
    for name in sorted(block):
        spec = block[name]
        here = f"{where}.{name}"
        if not isinstance(spec, Mapping):
            raise SweepError(
                f"{source}: field '{here}': expected a mapping with 'value', 'values', 'min'/'max', "
                f"'distribution' or 'parameters', found {spec!r}"
            )
        if "parameters" in spec:
            extra = sorted(set(spec) - {"parameters"})
            if extra:
                raise SweepError(f"{source}: field '{here}': a nested block holds only 'parameters', found also {extra}")
            out += _parse_parameters(source, f"{here}.parameters", spec["parameters"], (*prefix, name))
        else:
            out.append(_parse_leaf(source, here, (*prefix, name), dict(spec)))
    return out


def _parse_leaf(source: str, here: str, path: tuple[str, ...], spec: dict[str, Any]) -> Parameter:
    """One parameter's spec, checked field by field as wandb's schema does."""
    dist = spec.get("distribution")
    if dist is None:
        if "value" in spec:
            dist = "constant"
        elif "values" in spec:
            dist = "categorical_w_probabilities" if "probabilities" in spec else "categorical"
        elif "min" in spec and "max" in spec:
            both_int = all(isinstance(spec[k], int) and not isinstance(spec[k], bool) for k in ("min", "max"))
            dist = "int_uniform" if both_int else "uniform"
        else:
            raise SweepError(
                f"{source}: field '{here}': expected 'value', 'values', 'min' and 'max', 'distribution' "
                f"or 'parameters', found fields {sorted(spec)}"
            )
    if dist in DEPRECATED:
        raise SweepError(
            f"{source}: field '{here}.distribution': {dist} (min/max are base-e exponents) is deprecated and "
            f"rejected by wandb; expected {DEPRECATED[dist]} (min/max are the limit values)"
        )
    if dist not in DISTRIBUTIONS:
        raise SweepError(f"{source}: field '{here}.distribution': expected one of {', '.join(DISTRIBUTIONS)}, found {dist!r}")
    required, defaults = DISTRIBUTIONS[dist]
    extra = sorted(set(spec) - {"distribution", *required, *defaults})
    if extra:
        raise SweepError(
            f"{source}: field '{here}': distribution {dist} takes {', '.join((*required, *defaults))}, "
            f"found unexpected {extra}"
        )
    missing = [k for k in required if k not in spec]
    if missing:
        raise SweepError(f"{source}: field '{here}': distribution {dist} needs {', '.join(required)}, missing {missing}")
    spec = {**defaults, **spec, "distribution": dist}
    for key in ("min", "max", "mu", "sigma", "q", "a", "b"):
        if key in spec and not _is_number(spec[key]):
            raise SweepError(f"{source}: field '{here}.{key}': expected a number, found {_found(spec[key])}")
    if dist == "int_uniform" and not all(isinstance(spec[k], int) for k in ("min", "max")):
        raise SweepError(f"{source}: field '{here}': int_uniform needs integer min and max, found {spec['min']!r}, {spec['max']!r}")
    if "min" in spec and not spec["min"] < spec["max"]:
        raise SweepError(f"{source}: field '{here}': expected min < max, found min {spec['min']!r}, max {spec['max']!r}")
    if dist.endswith("_values") and not spec["min"] > 0:
        raise SweepError(f"{source}: field '{here}.min': {dist} needs min > 0, found {spec['min']!r}")
    for key, low in (("sigma", 0.0), ("a", 0.0), ("b", 0.0)):
        if key in spec and not spec[key] >= low:
            raise SweepError(f"{source}: field '{here}.{key}': expected a number >= {low}, found {spec[key]!r}")
    if "q" in spec and not spec["q"] > 0:
        raise SweepError(f"{source}: field '{here}.q': expected a number > 0, found {spec['q']!r}")
    if "values" in spec:
        values = spec["values"]
        if not isinstance(values, list) or not values:
            raise SweepError(f"{source}: field '{here}.values': expected a non-empty list, found {values!r}")
        if dist == "categorical_w_probabilities":
            probs = spec["probabilities"]
            if (not isinstance(probs, list) or len(probs) != len(values)
                    or not all(_is_number(p) and p >= 0 for p in probs) or not math.isclose(sum(probs), 1.0, abs_tol=1e-8)):
                raise SweepError(
                    f"{source}: field '{here}.probabilities': expected {len(values)} numbers >= 0 summing to 1 "
                    f"(one per value), found {probs!r}"
                )
    for key in ("value", "values"):
        if key in spec:
            hit = _find_none(spec[key])
            if hit is not None:
                raise SweepError(
                    f"{source}: field '{here}.{key}{hit}': found null; wandb's agent passes None as the text "
                    "'None', which the Lightning CLI does not read as null; leave the key out of the sweep instead"
                )
    return Parameter(path=path, distribution=dist, spec=spec)


def agent_args(point: Mapping[str, Any]) -> dict[str, list[str]]:
    """The argument forms wandb's agent builds from a run's parameters.

    Args:
        point: top-level parameter name -> value (a dict for a nested block), in the
            order the flags are to appear.

    Returns:
        ``{macro name: entries}`` for every macro in ``_ARG_MACROS`` (``args``,
        ``args_no_hyphens``, …), as ``create_sweep_command_args`` makes them.
    """
    out: dict[str, list[str]] = {k: [] for k in _ARG_MACROS}
    for name, value in point.items():
        flag = f"{name}={value}"
        out["args"].append("--" + flag)
        out["args_no_hyphens"].append(flag)
        out["args_no_equals"] += [f"--{name}", str(value)]
        out["args_append_hydra"].append("+" + flag)
        out["args_override_hydra"].append("++" + flag)
        if isinstance(value, bool):
            if value:
                out["args_no_boolean_flags"].append("--" + name)
        else:
            out["args_no_boolean_flags"].append("--" + flag)
    out["args_json"] = [json.dumps(dict(point))]
    return out


def _substitute_envvars(entry: str) -> str:
    """``${envvar:NAME}`` -> ``$NAME`` (``NAME`` itself when unset), as the agent does."""
    for m in list(_ENVVAR.finditer(entry))[::-1]:
        entry = f"{entry[: m.start()]}{os.environ.get(m.group(1), m.group(1))}{entry[m.end():]}"
    return entry


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
        parameters: its leaves, in wandb's (sorted) order.
        template: the ``command`` field, the template of every run's command (wandb's
            default when the file has none).
        program: the ``program`` field, if any.
        metric: the ``metric`` field (``name``, ``goal`` filled in), if any.
        config: the whole file as read.
    """

    source: str
    method: str
    parameters: tuple[Parameter, ...]
    template: tuple[str, ...] = field(default=DEFAULT_COMMAND)
    program: str | None = None
    metric: dict[str, Any] | None = field(default=None, hash=False)
    config: dict[str, Any] = field(default_factory=dict, hash=False)

    # ------------------------------------------------------------------ building
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
        unknown = sorted(set(config) - set(SWEEP_FIELDS))
        if unknown:
            raise SweepError(f"{source}: field '{unknown[0]}': not a wandb sweep field; expected one of {', '.join(SWEEP_FIELDS)}")
        method = config.get("method")
        if method not in METHODS:
            raise SweepError(f"{source}: field 'method': expected one of {', '.join(METHODS)}, found {method!r}")
        metric = config.get("metric")
        if metric is not None:
            if not isinstance(metric, Mapping):
                raise SweepError(f"{source}: field 'metric': expected a mapping with 'name' and 'goal', found {metric!r}")
            bad = sorted(set(metric) - set(METRIC_FIELDS))
            if bad:
                raise SweepError(f"{source}: field 'metric.{bad[0]}': expected one of {', '.join(METRIC_FIELDS)}")
            if not isinstance(metric.get("name"), str) or not metric["name"]:
                raise SweepError(f"{source}: field 'metric.name': expected the name of a logged metric, found {metric.get('name')!r}")
            metric = {"goal": "minimize", **metric}
            if metric["goal"] not in GOALS:
                raise SweepError(f"{source}: field 'metric.goal': expected one of {', '.join(GOALS)}, found {metric['goal']!r}")
        elif method == "bayes":
            raise SweepError(f"{source}: field 'metric': a bayes sweep needs a metric to model, found none")
        program = config.get("program")
        if program is not None and not isinstance(program, str):
            raise SweepError(f"{source}: field 'program': expected a string, found {program!r}")
        command = config.get("command", list(DEFAULT_COMMAND))
        if not isinstance(command, list) or not command:
            raise SweepError(f"{source}: field 'command': expected a non-empty list of command entries, found {command!r}")
        for i, entry in enumerate(command):
            if isinstance(entry, (Mapping, list)) or entry is None:
                raise SweepError(f"{source}: field 'command[{i}]': expected a string, found {entry!r}")
            text = _ENVVAR.sub("", str(entry))
            if "${" not in text:
                continue
            m = re.fullmatch(r"\$\{([^}]*)\}", str(entry))
            name = m.group(1) if m else None
            if name in _UNSUPPORTED_MACROS:
                raise SweepError(f"{source}: field 'command[{i}]': ${{{name}}} is not supported ({_UNSUPPORTED_MACROS[name]})")
            if name not in MACROS:
                raise SweepError(
                    f"{source}: field 'command[{i}]': expected a whole-entry macro "
                    f"{', '.join('${' + k + '}' for k in MACROS)} or ${{envvar:NAME}}, found {entry!r}"
                )
            if name == "program" and program is None:
                raise SweepError(f"{source}: field 'program': command[{i}] uses ${{program}}, but the file sets no program")
        if "parameters" not in config:
            raise SweepError(f"{source}: field 'parameters': missing; expected the mapping of swept Lightning CLI keys")
        params = tuple(_parse_parameters(source, "parameters", config["parameters"], ()))
        if method == "grid":
            for p in params:
                if p.distribution not in GRID_DISTRIBUTIONS:
                    raise SweepError(
                        f"{source}: field 'parameters.{p.name}': a grid takes {', '.join(GRID_DISTRIBUTIONS)} "
                        f"parameters, found {p.distribution}"
                    )
        return cls(source=source, method=method, parameters=params, template=tuple(str(c) for c in command),
                   program=program, metric=metric, config=dict(config))

    # ------------------------------------------------------------------ points
    @property
    def size(self) -> int | None:
        """Points in the grid; ``None`` for random and bayes sweeps (they never end)."""
        if self.method != "grid":
            return None
        return math.prod(len(p.grid_values()) for p in self.parameters)

    def _nest(self, values: list[Any]) -> dict[str, Any]:
        """The run config of one value per parameter: plain parameters first, then nested
        blocks, each in sorted order (as wandb's ``HyperParameterSet.to_config``)."""
        point: dict[str, Any] = {}
        nested: dict[str, Any] = {}
        for p, v in zip(self.parameters, values):
            if len(p.path) == 1:
                point[p.name] = _native(v)
                continue
            d = nested
            for key in p.path[:-1]:
                d = d.setdefault(key, {})
            d[p.path[-1]] = _native(v)
        return {**point, **nested}

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
            grids = [p.grid_values() for p in self.parameters]
            size = math.prod(len(g) for g in grids)
            if index >= size:
                raise IndexError(f"{self.source}: point index: expected 0..{size - 1} (the grid has {size} points), found {index}")
            values, rest = [], int(index)
            for g in reversed(grids):
                rest, i = divmod(rest, len(g))
                values.append(g[i])
            return self._nest(values[::-1])
        rng = np.random.default_rng([int(seed), int(index)])
        return self._nest([p.sample(rng) for p in self.parameters])

    def points(self, n: int | None = None, seed: int = 0) -> list[dict[str, Any]]:
        """Points ``0..n-1`` (a grid: all of them when ``n`` is None, at most ``size``).

        Raises:
            ValueError: ``n`` is None for a random or bayes sweep.
        """
        if self.method == "grid":
            size = self.size
            return [self.point(i) for i in range(size if n is None else min(n, size))]
        if n is None:
            raise ValueError(f"{self.source}: a {self.method} sweep has no end; pass the number of points n")
        return [self.point(i, seed) for i in range(n)]

    # ------------------------------------------------------------------ commands
    def command(self, point: Mapping[str, Any]) -> list[str]:
        """The argv wandb's agent would run for ``point`` (see the module docstring).

        Args:
            point: as returned by :meth:`point`.
        """
        macros: dict[str, list[str]] = {
            **agent_args(point),
            "interpreter": ["python"],
            "program": [] if self.program is None else [self.program],
            "env": [] if platform.system() == "Windows" else ["/usr/bin/env"],
        }
        argv: list[str] = []
        for entry in self.template:
            entry = _substitute_envvars(entry)
            if entry.startswith("${") and entry.endswith("}"):
                argv += macros[entry[2:-1]]
            else:
                argv.append(entry)
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
        raise SweepError(f"{path}: not valid YAML: {err}") from err
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
    run = sub.add_parser("run", help="run one point in this process (arguments after -- are appended)")
    run.add_argument("file", type=Path)
    run.add_argument("--index", type=int, required=True, help="the point to run (0-based), e.g. $SLURM_ARRAY_TASK_ID")
    run.add_argument("--seed", type=int, default=0, help="seed of random/bayes draws (default 0)")
    return p


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

