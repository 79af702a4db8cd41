"""A tiny classifier run folder (config.yaml + checkpoint), as the Lightning CLI leaves it, for eval and logger tests."""

from __future__ import annotations

from pathlib import Path

import torch
import yaml

MODEL = {
    "class_path": "neuroreg.models.classifier.RegularizedClassifier",
    "init_args": {
        "backbone": {"class_path": "neuroreg.models.backbones.SmallResNet", "init_args": {"in_channels": 1, "widths": [4, 8]}},
        "mean": [0.3], "std": [0.32],
    },
}
DATA = {
    "class_path": "neuroreg.data.datamodules.RegularizedDataModule",
    "init_args": {"images": {"class_path": "neuroreg.data.images.Digits", "init_args": {"size": 32}}, "eval_batch_size": 64},
}


def make_run(run: Path, num_classes: int = 10, seed: int = 0) -> Path:
    """A run directory with config.yaml and an (untrained) checkpoint, as the Lightning CLI leaves it."""
    from neuroreg.models.backbones import SmallResNet
    from neuroreg.models.classifier import RegularizedClassifier

    run.mkdir(parents=True)
    (run / "config.yaml").write_text(yaml.safe_dump({"seed_everything": seed, "model": MODEL, "data": DATA}))
    torch.manual_seed(seed)
    model = RegularizedClassifier(SmallResNet(in_channels=1, widths=[4, 8]), num_classes=num_classes, mean=[0.3], std=[0.32])
    ckpt = run / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir()
    torch.save({"state_dict": model.state_dict(), "hyper_parameters": {"num_classes": num_classes}}, ckpt)
    return ckpt
