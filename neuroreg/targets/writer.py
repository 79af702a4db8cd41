"""Streams a twin's predictions for an image set into a TargetSet file.

:class:`TargetSetWriter` is the Lightning prediction-writer callback of ``neuroreg
predict``; :func:`predict_target_set` does the same for a twin in memory (what
:class:`~neuroreg.targets.twin.TwinTargets` uses). Both name the file by
:func:`twin_target_key`, which hashes the twin checkpoint's bytes and the images' content.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from pytorch_lightning.callbacks import BasePredictionWriter
from pytorch_lightning.utilities import rank_zero_info

from ..io import file_hash
from .format import TargetSet, TargetSetError, TargetSetStream, target_key


def twin_target_key(checkpoint_sha256: str, images_fingerprint: str) -> str:
    """Key of a TargetSet predicted by a twin: ``target_key(checkpoint bytes hash, images fingerprint)``."""
    return target_key("twin-targets", checkpoint_sha256, images_fingerprint)


def target_path(output_dir: str | Path, key: str) -> Path:
    """``output_dir/twin_<first 20 hex digits of key>.h5``, where a twin's TargetSet is kept."""
    return Path(output_dir) / f"twin_{key[:20]}.h5"


class TargetSetWriter(BasePredictionWriter):
    """Writes every predicted batch into a pre-sized TargetSet (``neuroreg predict``).

    Needs a twin checkpoint (``--ckpt_path``; its bytes are hashed into the key) and a
    data module with ``predict_keys()`` and ``predict_fingerprint()`` (e.g.
    :class:`~neuroreg.data.datamodules.NeuralDataModule` with ``predict_images``). The file
    ``{output_dir}/twin_{key[:20]}.h5`` is written through a temporary file; if it
    already exists with the same key, prediction is skipped and the file reused; a
    file there with another key is an error. Predictions are not accumulated in
    memory (the writer turns the trainer's ``return_predictions`` off), so memory
    stays flat as the image count grows.

    Args:
        output_dir: folder of TargetSets.
        dtype: ``float32`` or ``float16``.

    Attributes:
        path: the TargetSet written or reused (set at setup).
        reused: whether an existing file was reused.
    """

    def __init__(self, output_dir: str = "data/targets", dtype: str = "float32"):
        super().__init__(write_interval="batch")
        if dtype not in ("float32", "float16"):
            raise ValueError(f"TargetSetWriter: 'dtype': expected float32 or float16, found {dtype!r}")
        self.output_dir = Path(output_dir)
        self.dtype = dtype
        self.path: Path | None = None
        self.reused = False
        self._stream: TargetSetStream | None = None

    def setup(self, trainer, pl_module, stage: str) -> None:
        if stage == "predict":
            trainer.predict_loop.return_predictions = False  # rows go to disk, not to a list

    def on_predict_start(self, trainer, pl_module) -> None:
        ckpt = trainer.ckpt_path  # known once the checkpoint is restored, i.e. here, not in setup
        if not ckpt:
            raise ValueError("TargetSetWriter: a twin checkpoint is required (--ckpt_path): the TargetSet key hashes its bytes")
        dm = trainer.datamodule
        if dm is None or not hasattr(dm, "predict_keys"):
            raise ValueError(f"TargetSetWriter: expected a data module with predict_keys() (NeuralDataModule), found {type(dm).__name__}")
        key = twin_target_key(file_hash(ckpt), dm.predict_fingerprint())
        self.path = target_path(self.output_dir, key)
        self.reused = False
        if self.path.exists():
            found = TargetSet.read_header(self.path)["key"]
            if found != key:
                raise TargetSetError(f"{self.path}: attribute 'key': expected {key}, found {found}; delete the file")
            rank_zero_info(f"TargetSetWriter: reusing {self.path} (same twin checkpoint and images)")
            self.reused = True
            return
        n_neurons = int(getattr(pl_module, "total_neurons", 0))
        self._stream = TargetSetStream(
            self.path, dm.predict_keys(), n_neurons, key, source=f"twin {Path(ckpt).name}", dtype=self.dtype,
            chunk_rows=getattr(dm, "eval_batch_size", None),
        )

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.reused:
            # the prediction loop treats StopIteration raised around a step as its end:
            # an existing TargetSet is reused without a single forward pass
            raise StopIteration

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx) -> None:
        if self._stream is None:
            return
        index = batch["index"].cpu().numpy()
        rows = prediction.detach().float().cpu().numpy()
        start = int(index[0])
        if not np.array_equal(index, np.arange(start, start + len(index))):
            raise ValueError("TargetSetWriter: expected consecutive image indices in every batch (an unshuffled predict loader)")
        self._stream.write(start, rows)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._stream is not None:
            self._stream.commit()
            rank_zero_info(f"TargetSetWriter: wrote {self.path}")
            self._stream = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        if self._stream is not None:
            self._stream.abort()
            self._stream = None


@torch.no_grad()
def predict_target_set(
    twin,
    images: np.ndarray | torch.utils.data.Dataset,
    keys: np.ndarray,
    path: str | Path,
    key: str,
    source: str = "",
    batch_size: int = 256,
    dtype: str = "float32",
) -> Path:
    """Stream ``twin``'s predictions for ``images`` into a TargetSet at ``path``.

    Args:
        twin: a :class:`~neuroreg.twin.module.TwinModule` (put in eval mode here).
        images: ``[N, C, H, W]`` uint8 array (converted batch by batch) .
        keys: ``[N]`` image keys.
        path, key, source, dtype: see :class:`~neuroreg.targets.format.TargetSetStream`.
        batch_size: images per forward pass.

    Returns:
        the committed path.
    """
    twin.eval()
    device = next(twin.parameters()).device
    n = len(keys)
    with torch.inference_mode(), TargetSetStream(path, keys, twin.total_neurons, key, source=source, dtype=dtype,
                                                 chunk_rows=batch_size) as out, ThreadPoolExecutor(1) as pool:
        pending = None  # the previous block is written while the next one is predicted
        for start in range(0, n, batch_size):
            block = np.asarray(images[start : start + batch_size])
            x = torch.from_numpy(block).to(device)
            x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
            pred = twin(x).float().cpu().numpy()
            if pending is not None:
                pending.result()  # raises what writing it raised
            pending = pool.submit(out.write, start, pred)
        if pending is not None:
            pending.result()
    return Path(path)
