"""Does a digital twin denoise? Twin vs single trials vs repeat averages, against ground truth.

Fits the twin of ``experiments/twin/sim_mouse_v1.yaml`` (simulated mouse V1, 300
neurons; 1,000 noise images × 1 trial to fit, 200 × 1 to validate, 100 test images
× 10 repeats) and reports, on the test images, the neuron-averaged correlation
(across images) with the noise-free mean response of:

* a single trial (repeat 0),
* the average of the 10 repeats,
* the twin's prediction (which never saw the test images).

    OMP_NUM_THREADS=1 python benchmarks/bench_twin_denoising.py [--max-epochs 100] [--preset mouse_v1]
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import time

import pytorch_lightning as pl
import torch


class Progress(pl.Callback):
    """Prints the validation correlation after every epoch."""

    def on_validation_epoch_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get("val/correlation")
        if value is not None and not trainer.sanity_checking:
            print(f"epoch {trainer.current_epoch:3d}  val/correlation {float(value):.3f}", flush=True)


def main() -> None:
    from neuroreg.data.datamodules import NeuralDataModule
    from neuroreg.data.recording_sources import SimulatedRecording
    from neuroreg.data.simulated import V1Population
    from neuroreg.io import load_checkpoint
    from neuroreg.stats import pearson_columns
    from neuroreg.twin import metrics
    from neuroreg.twin.cores import Stacked2dCore
    from neuroreg.twin.losses import PoissonLoss
    from neuroreg.twin.module import TwinModule
    from neuroreg.twin.readouts import FactorizedReadout, GaussianReadout
    from neuroreg.twin.transforms import StimulusTransform

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--max-epochs", type=int, default=100)
    ap.add_argument("--preset", default="mouse_v1", choices=["mouse_v1", "macaque_v1"])
    ap.add_argument("--n-neurons", type=int, default=300)
    ap.add_argument("--n-train", type=int, default=1000)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--input-kernel", type=int, default=9)
    ap.add_argument("--hidden-kernel", type=int, default=7)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--lr", type=float, default=0.003)
    ap.add_argument("--gamma-input", type=float, default=0.1)
    ap.add_argument("--gamma-features", type=float, default=0.002)
    ap.add_argument("--patience", type=int, default=6)
    ap.add_argument("--readout", default="factorized", choices=["gaussian", "factorized"])
    ap.add_argument("--gamma-spatial", type=float, default=0.01)
    ap.add_argument("--gamma-smooth", type=float, default=1.0)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--quiet", action="store_true", help="no per-epoch progress lines")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    pl.seed_everything(args.seed, verbose=False)
    workdir = tempfile.mkdtemp(prefix="bench_twin_")
    pop = V1Population(n_neurons=args.n_neurons, preset=args.preset, image_size=32, seed=0)
    source = SimulatedRecording(pop, n_train=args.n_train, n_validation=200, n_test=100, test_repeats=10, seed=0, cache_dir=workdir)
    dm = NeuralDataModule(source, batch_size=args.batch_size, eval_batch_size=256)
    rec = dm.recordings["default"]
    twin = TwinModule(
        core=Stacked2dCore(1, args.channels, input_kernel=args.input_kernel, hidden_kernel=args.hidden_kernel,
                            layers=args.layers, gamma_input=args.gamma_input),
        readout=(
            functools.partial(GaussianReadout, init_sigma=0.2, gamma_features=args.gamma_features)
            if args.readout == "gaussian"
            else functools.partial(FactorizedReadout, gamma_spatial=args.gamma_spatial, gamma_smooth=args.gamma_smooth,
                              gamma_features=args.gamma_features)
        ),
        loss=PoissonLoss(),
        transform=StimulusTransform(size=(32, 32)),
        num_neurons=dm.num_neurons,
        optimizer=functools.partial(torch.optim.Adam, lr=args.lr),
    )
    ckpt = pl.callbacks.ModelCheckpoint(dirpath=workdir, monitor="val/correlation", mode="max")
    trainer = pl.Trainer(
        max_epochs=args.max_epochs, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[pl.callbacks.EarlyStopping("val/correlation", mode="max", patience=args.patience), ckpt]
        + ([] if args.quiet else [Progress()]),
    )
    t0 = time.perf_counter()
    trainer.fit(twin, datamodule=dm)
    fit_s = time.perf_counter() - t0
    twin.load_state_dict(load_checkpoint(ckpt.best_model_path)["state_dict"])
    twin.eval()

    index, reps = rec.repeats("test")  # [100], [100, 10, K]
    images = rec.images[index]
    truth = pop.mean_response(images)
    with torch.no_grad():
        pred = twin(torch.from_numpy(images).float() / 255.0).numpy()
    r_single = metrics.average(pearson_columns(reps[:, 0], truth))
    r_mean = metrics.average(pearson_columns(reps.mean(axis=1), truth))
    r_twin = metrics.average(pearson_columns(pred, truth))
    summary = metrics.summary(pred, reps)
    from neuroreg.data.images import Digits

    digits = Digits(size=32).split("test").images_float()
    with torch.no_grad():
        pred_digits = twin(torch.from_numpy(digits)).numpy()
    r_digits = metrics.average(pearson_columns(pred_digits, pop.mean_response(digits)))
    print(f"preset={args.preset} neurons={args.n_neurons} train images={args.n_train} x 1 trial, "
          f"epochs run={trainer.current_epoch}, fit {fit_s:.0f} s on {torch.get_num_threads()} thread(s)")
    print("correlation with the noise-free mean response on 100 test images (mean over neurons):")
    print(f"  single trial          {r_single:.3f}")
    print(f"  10-repeat average     {r_mean:.3f}")
    print(f"  twin prediction       {r_twin:.3f}")
    print(f"  twin / single trial   {r_twin / r_single:.2f}x")
    print(f"twin vs ground truth on {len(digits)} digit images (never recorded; other image statistics): {r_digits:.3f}")
    print("twin test metrics vs recorded trials: " + ", ".join(f"{k}={v:.3f}" for k, v in summary.items()))


if __name__ == "__main__":
    main()
