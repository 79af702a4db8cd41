"""TwinTargets: a classifier's training targets predicted by a digital twin.

Injected by ``class_path`` as the ``targets`` of a
:class:`~neuroreg.data.datamodules.RegularizedDataModule`; the classifier only sees the
resulting :class:`~neuroreg.targets.format.TargetSet`. A twin given by its config is
fitted here (a nested ``neuroreg fit``) or, under ``neuroreg repro``, by the ``twin``
stage that :meth:`TwinTargets.prerequisites` asks for.
"""

from __future__ import annotations

import functools
import os
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..data.images import SPLITS, ImageData
from ..io import atomic_path, file_hash, load_checkpoint
from ..runs.random_state import kept_random_state
from .base import Prerequisite, TargetSource
from .format import TargetSet, target_key
from .writer import predict_target_set, target_path, twin_target_key


def locate_config(path: str | os.PathLike[str]) -> Path:
    """A config path as given when it is absolute or exists from the working directory,
    else the same relative path under the folder that holds neuroreg's ``experiments/``
    (so shipped configs are found from anywhere, e.g. from a copied config in another
    folder); the path as given when neither exists.

    >>> locate_config("experiments/quickstart.yaml").is_file()
    True
    """
    p = Path(path)
    if p.is_absolute() or p.exists():
        return p
    shipped = Path(__file__).resolve().parents[2] / p
    return shipped if shipped.exists() else p


def _twin_stage(init_args: dict[str, Any]) -> dict[str, Any]:
    """The work of a ``twin`` repro stage: the checkpoint of the configured twin (fitted if not cached)."""
    source = TwinTargets(**init_args)
    ckpt = source.twin_checkpoint()
    return {"checkpoint": str(Path(ckpt).resolve()), "config": None if source.config is None else str(source.config),
            "overrides": source.overrides}


class TwinTargets(TargetSource):
    """Targets predicted by a twin, from a checkpoint or fitted from a twin config.

    With ``checkpoint``, that :class:`~neuroreg.twin.module.TwinModule` checkpoint is
    used. With ``config`` (a ``neuroreg fit`` YAML of a twin), the twin is fitted once and its best checkpoint cached as
    ``{cache_dir}/twin_{key}.ckpt``, the key hashing the resolved config (all
    arguments, defaults included) and the recording's content; a later run with the
    same key reuses it.

    Predictions for the ``splits`` of the image set are streamed into
    ``{cache_dir}/twin_{key}.h5``, keyed by the checkpoint's bytes and the images'
    content (:func:`~neuroreg.targets.writer.twin_target_key`), and reused when present.

    Args:
        config: twin config to fit (exactly one of ``config`` and ``checkpoint``); a
            relative path is looked up in the working directory, then next to
            neuroreg's shipped ``experiments/``.
        checkpoint: twin checkpoint to use.
        overrides: extra ``--key=value`` arguments for the twin config.
        splits: image splits to predict.
        batch_size: images per forward pass.
        dtype: ``float32`` or ``float16`` targets.
        cache_dir: folder of cached twins and TargetSets.

    Raises:
        ValueError: neither or both of config and checkpoint, or unknown splits.
        FileNotFoundError: the checkpoint or config does not exist.
    """

    def __init__(
        self,
        config: str | None = None,
        checkpoint: str | None = None,
        overrides: list[str] = (),
        splits: list[str] = ("train",),
        batch_size: int = 256,
        dtype: str = "float32",
        cache_dir: str = "data/targets",
    ):
        if (config is None) == (checkpoint is None):
            raise ValueError(f"TwinTargets: expected exactly one of 'config' and 'checkpoint', found config={config}, checkpoint={checkpoint}")
        unknown = [s for s in splits if s not in SPLITS]
        if unknown:
            raise ValueError(f"TwinTargets: 'splits': expected splits in {list(SPLITS)}, found {unknown}")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"TwinTargets: 'dtype': expected float32 or float16, found {dtype!r}")
        self.config = None if config is None else locate_config(config)
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        for name, path in (("config", self.config), ("checkpoint", self.checkpoint)):
            if path is not None and not path.exists():
                raise FileNotFoundError(f"TwinTargets: '{name}': file not found: {path}")
        self.overrides = list(overrides)
        self.splits = list(splits)
        self.batch_size = batch_size
        self.dtype = dtype
        self.cache_dir = Path(cache_dir)
        self._cli = None
        self._fit_key: str | None = None

    @classmethod
    def prerequisites(cls, init_args: dict[str, Any]) -> list[Prerequisite]:
        """One ``twin`` stage: the checkpoint of the twin (fitting ``config`` with
        ``overrides`` unless cached). Its key hashes the config section and the config
        file's content (with the YAML files it names), or the ``checkpoint`` path."""
        init = dict(init_args)
        depends_on = (locate_config(init["config"]),) if init.get("config") else (init.get("checkpoint"),)
        return [Prerequisite("twin", depends_on, functools.partial(_twin_stage, init))]

    # ------------------------------------------------------------ the twin
    def _twin_cli(self):
        """The twin config, parsed and instantiated (model, data, trainer) but not run."""
        if self._cli is None:
            from pytorch_lightning import LightningDataModule, LightningModule

            from ..cli import NeuroregCLI

            with kept_random_state(), warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*args parameter is intended.*")
                self._cli = NeuroregCLI(
                    LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    args=["--config", str(self.config), *self.overrides, "--trainer.logger=false",
                          f"--trainer.default_root_dir={self.cache_dir / 'twin_fits'}"],
                    run=False, auto_configure_optimizers=False, save_config_callback=None,
                )
            cfg = self._cli.config.clone()
            cfg["trainer.default_root_dir"] = None
            dump = self._cli.parser.dump(cfg, skip_check=True)
            self._fit_key = target_key("twin-fit", dump, self._cli.datamodule.fingerprint())
        return self._cli

    @property
    def num_neurons(self) -> int:
        """Neurons the twin predicts (all readouts together)."""
        if self.checkpoint is not None:
            hp = load_checkpoint(self.checkpoint, mmap=True).get("hyper_parameters", {})
            n = hp.get("num_neurons")
            if n is None:
                raise ValueError(f"{self.checkpoint}: field 'hyper_parameters.num_neurons': expected a TwinModule checkpoint, found none")
            return int(sum(n.values())) if isinstance(n, dict) else int(n)
        n = self._twin_cli().datamodule.num_neurons
        return int(sum(n.values())) if isinstance(n, dict) else int(n)

    def twin_checkpoint(self) -> Path:
        """The checkpoint: the given one, or the cached / freshly fitted twin of ``config``."""
        if self.checkpoint is not None:
            return self.checkpoint
        cli = self._twin_cli()
        path = self.cache_dir / f"twin_{self._fit_key[:20]}.ckpt"
        if path.exists():
            return path
        with kept_random_state():
            if cli.config.get("seed_everything") is not None:
                from pytorch_lightning import seed_everything

                seed_everything(cli.config["seed_everything"], verbose=False)
            cli.trainer.fit(cli.model, datamodule=cli.datamodule)
        with atomic_path(path) as tmp:
            best = getattr(cli.trainer.checkpoint_callback, "best_model_path", "")
            if best:
                shutil.copyfile(best, tmp)
                os.remove(best)  # the cached copy is the one that counts
            else:
                cli.trainer.save_checkpoint(tmp)
        return path

    # ------------------------------------------------------------- targets
    def target_set(self, images: ImageData) -> TargetSet:
        from ..twin.module import TwinModule

        ckpt = self.twin_checkpoint()
        fingerprint = target_key("image-splits", *[f"{s}:{images.split(s).fingerprint()}" for s in self.splits])
        key = twin_target_key(file_hash(ckpt), fingerprint)
        path = target_path(self.cache_dir, key)
        if not path.exists():
            with kept_random_state():  # building the modules draws random initial weights
                load_checkpoint(ckpt, mmap=True)  # refuses a file that holds more than plain data, naming it
                twin = TwinModule.load_from_checkpoint(ckpt, map_location="cpu", weights_only=True)
            parts = [images.split(s) for s in self.splits]
            predict_target_set(
                twin,
                np.concatenate([p.images for p in parts]),
                np.concatenate([p.keys for p in parts]),
                path, key, source=f"twin {ckpt.name}", batch_size=self.batch_size, dtype=self.dtype,
            )
        return TargetSet.load(path, expected_key=key)
