"""Every Regularizer of ``neuroreg.regularizers``, found by walking the package (timm style).

Tests loop over :func:`cases` instead of a hand-written list: a new regularizer module
gets the finite-loss, NaN, gradient, invariance and DDP checks without anyone editing a
test. Constructor arguments come from each class's signature: required arguments are
filled from :data:`REQUIRED` by name (a class needing anything else fails, naming the
class and the argument), and each ``Literal`` choice and ``bool`` flag other than its
default gives one more case.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import typing
from dataclasses import dataclass, field

import torch

import neuroreg.regularizers as package
from neuroreg.regularizers import Regularizer

#: values for the constructor arguments without a default, by argument name
REQUIRED = {"layers": ["x"]}
#: arguments not varied: ``gather`` only matters across DDP ranks (tests/test_ddp.py)
NOT_VARIED = {"gather", "layers"}
#: per-image feature shape and number of neurons every case is built for
FEATURE_SHAPE = (8, 6, 6)
NEURONS = 20


def regularizer_classes() -> list[type[Regularizer]]:
    """Concrete Regularizer subclasses defined in any module of ``neuroreg.regularizers``."""
    found = {}
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if (
                issubclass(cls, Regularizer)
                and cls is not Regularizer
                and cls.__module__ == module.__name__
                and cls.forward is not Regularizer.forward
            ):
                found[cls.__qualname__] = cls
    return [found[name] for name in sorted(found)]


def required_kwargs(cls: type[Regularizer]) -> dict:
    """Values for ``cls``'s arguments without a default; raises naming any unknown one."""
    kwargs = {}
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) or p.default is not p.empty:
            continue
        if name not in REQUIRED:
            raise LookupError(
                f"{cls.__qualname__}: no test value for its required argument {name!r}; give it a default "
                f"or add {name!r} to REQUIRED in tests/_regularizers.py"
            )
        kwargs[name] = REQUIRED[name]
    return kwargs


def option_kwargs(cls: type[Regularizer]) -> list[dict]:
    """One ``{argument: value}`` per non-default ``Literal`` choice or flipped ``bool`` flag."""
    hints = typing.get_type_hints(cls.__init__)
    options = []
    for name, p in inspect.signature(cls.__init__).parameters.items():
        if name in NOT_VARIED or p.default is p.empty:
            continue
        hint = hints.get(name)
        if typing.get_origin(hint) is typing.Literal:
            options += [{name: v} for v in typing.get_args(hint) if v != p.default]
        elif hint is bool:
            options.append({name: not p.default})
    return options


@dataclass(frozen=True)
class Case:
    cls: type[Regularizer]
    options: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.cls.__qualname__ + "".join(f"[{k}={v}]" for k, v in self.options.items())

    def build(self, feature_shape=FEATURE_SHAPE, neurons=NEURONS, seed=0, **sizes) -> Regularizer:
        """The regularizer, built for ``{"x": feature_shape}`` and ``neurons`` targets.

        ``sizes`` (e.g. ``dim=3``) are passed to the classes whose signature has them.
        """
        accepted = inspect.signature(self.cls.__init__).parameters
        torch.manual_seed(seed)
        reg = self.cls(
            **required_kwargs(self.cls), **{k: v for k, v in sizes.items() if k in accepted}, **self.options
        )
        reg.build({"x": tuple(feature_shape)}, neurons)
        return reg


def cases() -> list[Case]:
    """The default configuration of every regularizer, then one case per option."""
    out = []
    for cls in regularizer_classes():
        out.append(Case(cls))
        out += [Case(cls, o) for o in option_kwargs(cls)]
    return out
