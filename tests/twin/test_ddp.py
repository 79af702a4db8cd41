"""Twins under distributed data parallel: each rank trains on its share, metrics use every rank's images.

The DDP run is Lightning's ``ddp_spawn`` on 2 CPU processes (gloo); its validation
metrics must equal those of one process on the same data and weights (correlation,
oracle and FEV computed once over the gathered predictions, not averaged per rank).
"""

import functools
from types import SimpleNamespace

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from neuroreg.data.datamodules import NeuralDataModule
from neuroreg.data.recording_sources import SimulatedRecording
from neuroreg.data.sampling import GroupedBatchSampler
from neuroreg.data.simulated import V1Population
from neuroreg.twin.cores import Stacked2dCore
from neuroreg.twin.module import TwinModule
from neuroreg.twin.transforms import StimulusTransform


@pytest.mark.parametrize("drop_last", [True, False])
def test_grouped_batches_are_shared_out_disjointly(drop_last):
    sizes = [37, 20]
    full = list(GroupedBatchSampler(sizes, 8, shuffle=True, drop_last=drop_last, seed=3))
    shares = [list(GroupedBatchSampler(sizes, 8, shuffle=True, drop_last=drop_last, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    lengths = [len(GroupedBatchSampler(sizes, 8, shuffle=True, drop_last=drop_last, seed=3, num_replicas=3, rank=r)) for r in range(3)]
    assert [len(s) for s in shares] == lengths
    flat = [tuple(b) for s in shares for b in s]
    assert len(set(flat)) == len(flat) and set(flat) <= {tuple(b) for b in full}  # disjoint, from the same epoch order
    if drop_last:
        assert len(set(lengths)) == 1 and sum(lengths) == len(full) // 3 * 3  # lockstep
    else:
        assert sorted(flat) == sorted(tuple(b) for b in full)  # every evaluation batch exactly once
    with pytest.raises(ValueError, match="rank"):
        GroupedBatchSampler(sizes, 8, shuffle=False, drop_last=False, num_replicas=2, rank=2)


def _source(tmp_path):
    pop = V1Population(n_neurons=6, image_size=16, seed=0)
    return SimulatedRecording(pop, n_train=48, n_validation=20, n_test=10, test_repeats=3, cache_dir=str(tmp_path / "rec"))


def test_datamodule_gives_each_rank_its_trials(tmp_path):
    seen = []
    for rank in (0, 1):
        dm = NeuralDataModule(_source(tmp_path), batch_size=8, seed=1)
        dm.trainer = SimpleNamespace(world_size=2, global_rank=rank)
        loader = dm.train_dataloader()
        seen.append([tuple(b) for b in loader.batch_sampler])
    one = NeuralDataModule(_source(tmp_path), batch_size=8, seed=1).train_dataloader()
    everything = [tuple(b) for b in one.batch_sampler]
    assert len(seen[0]) == len(seen[1]) == len(everything) // 2
    assert not set(seen[0]) & set(seen[1]) and set(seen[0]) | set(seen[1]) <= set(everything)


def _twin():
    torch.manual_seed(0)
    return TwinModule(
        core=Stacked2dCore(1, 4, input_kernel=5, hidden_kernel=3, layers=2, gamma_input=0.1, gamma_hidden=0.01),
        transform=StimulusTransform(size=(16, 16)), num_neurons=6, optimizer=functools.partial(torch.optim.Adam, lr=0.01),
    )


def _trainer(**kw):
    return pl.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                      enable_checkpointing=False, **kw)


@pytest.mark.slow
def test_ddp_test_metrics_equal_single_process(tmp_path, monkeypatch):
    # a port another DDP test of this process left in the environment may still be taken: let Lightning pick a free one
    monkeypatch.delenv("MASTER_PORT", raising=False)
    dm = NeuralDataModule(_source(tmp_path), batch_size=8, eval_batch_size=3)  # 10 test images x 3 repeats: 4 batches
    model = _twin()
    single = _trainer(devices=1).test(model, datamodule=dm, verbose=False)[0]
    ddp = _trainer(devices=2, strategy="ddp_spawn", use_distributed_sampler=False).test(
        model, datamodule=NeuralDataModule(_source(tmp_path), batch_size=8, eval_batch_size=3), verbose=False
    )[0]
    keys = list(single)  # the loss too: the batch losses of all ranks are gathered, then averaged
    assert {"test/correlation", "test/oracle_correlation", "test/fev", "test/fraction_oracle", "test/loss/loss"} <= set(keys)
    for k in keys:
        np.testing.assert_allclose(ddp[k], single[k], rtol=1e-5, atol=1e-6, err_msg=k)
