"""Twins of real macaque V4 (Cowley et al. 2023) against linear baselines, per session.

For every copied session the held-out images are the reader's ``test`` tier: a fixed,
seeded split by image content (exact and near-duplicate images share a tier, and an
image has the same tier in every session), the same images for every model. Each model
predicts the repeat-averaged response to those images; the score is the median over
neurons of Pearson's r across held-out images.

Models:

- ``multi``: the twin of ``experiments/twin/cowley2023_v4.yaml`` (one core for all
  sessions, one readout each), trained on the train tiers, early-stopped on validation;
- ``single``: ``experiments/twin/cowley2023_v4_single.yaml`` fitted to that session alone;
- ``pixel_ridge``: ridge regression on 28x28 gray pixels;
- ``gabor_ridge``: ridge regression on a fixed bank of simple + complex Gabor features
  (8 orientations, 2 frequencies, 3 pyramid levels, pooled on a 7x7 grid; the bank of
  :class:`neuroreg.twin.cores.GaborCore`); ridges fit train + validation images with
  ``RidgeCV`` (one penalty per neuron);
- ``shuffled``: the Gabor ridge fitted to responses with the images permuted (a null).

On 210325 (trial-level repeats) also the split-half ceiling of the held-out images
(:func:`neuroreg.evaluation.brain.split_half_ceiling`) and each model's median
``r / ceiling``.

Writes ``results.json``, ``results.csv`` and ``results.png`` under ``--out`` and prints
one table. Timings depend on the machine's load (other jobs share its cores).

    python benchmarks/bench_twin_real.py [--quick] [--data-dir /work/shared/data] [--out runs/bench_twin_real]
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neuroreg.data.readers.cowley2023 import read_cowley2023, session_files  # noqa: E402
from neuroreg.data.recording import NeuralRecording  # noqa: E402
from neuroreg.evaluation.brain import split_half_ceiling  # noqa: E402
from neuroreg.imageops import block_mean  # noqa: E402
from neuroreg.io import atomic_write  # noqa: E402
from neuroreg.twin.cores import GaborCore  # noqa: E402

SESSIONS = ("190925", "190927", "190928", "190929", "210224", "210305", "210322", "210325", "210621")
CEILING_SESSION = "210325"
MODELS = ("multi", "single", "gabor_ridge", "pixel_ridge", "shuffled")
#: Gabor-energy ridge, 5-fold over images, median r (data README; 190925: images 1-900)
REFERENCE = {"190925": 0.56, "190927": 0.41, "210322": 0.37, "210325": 0.49, "210224": 0.38}
MULTI = ROOT / "experiments" / "twin" / "cowley2023_v4.yaml"
SINGLE = ROOT / "experiments" / "twin" / "cowley2023_v4_single.yaml"


def data_folder(arg: str | None) -> Path:
    base = Path(arg or os.environ.get("NEUROREG_TEST_DATA") or ROOT.parent / "shared" / "data")
    folder = base / "cowley2023_v4" / "data_V4_responses"
    if not folder.is_dir():
        raise SystemExit(f"bench_twin_real: Cowley 2023 files not found under {base} (expected {folder}); pass --data-dir")
    return folder


def convert(folder: Path, out: Path, session: str, downsample: int = 1) -> Path:
    """The session as a NeuralRecording ``.h5`` (cached), read as the configs' manifests read it."""
    path = out / "recordings" / f"cowley2023-v4-{session}-x{downsample}.h5"
    if not path.exists():
        files = session_files(folder, session)
        rec = read_cowley2023(
            files["images"],
            files["responses"],
            files["raw_responses"] if files["raw_responses"].exists() else None,
            session=session,
            pixels_per_degree=20.0,  # as the manifests: assumed (not stated by the source), unused here
            downsample=downsample,
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        rec.save(path)
    return path


def columns_r(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``[K]`` Pearson r between the columns of ``[M, K]`` arrays."""
    p = pred - pred.mean(0)
    t = target - target.mean(0)
    den = np.sqrt((p * p).sum(0) * (t * t).sum(0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (p * t).sum(0) / den, np.nan)


def image_tiers(rec: NeuralRecording) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(image index [M], mean response [M, K], tier [M])`` of the images shown."""
    index, mean = rec.mean_per_image()
    tier = np.empty(rec.n_images, dtype=object)
    tier[rec.trial_image] = rec.trial_tier
    return index, mean, tier[index]


# ------------------------------------------------------------------ baselines
def gabor_features(images: np.ndarray) -> np.ndarray:
    """``[N, F]`` sqrt-compressed Gabor simple/complex features of ``[N, C, H, W]`` images in [0, 1]."""
    core = GaborCore(orientations=8, frequencies=[0.25, 0.125], levels=3, out_size=[7, 7], hidden_channels=0, layers=0)
    x = torch.nn.functional.avg_pool2d(torch.as_tensor(images).mean(dim=1, keepdim=True), 2)  # 112 -> 56 px, as the twins
    x = (x - x.mean()) / x.std()
    with torch.no_grad():
        feats = torch.cat([core.gabor_features(x[i : i + 256]) for i in range(0, len(x), 256)])
    return feats.flatten(1).sqrt().numpy()


def pixel_features(images: np.ndarray) -> np.ndarray:
    x = torch.as_tensor(images).mean(dim=1, keepdim=True)
    return torch.nn.functional.adaptive_avg_pool2d(x, 28).flatten(1).numpy()


def ridge_r(features: np.ndarray, mean: np.ndarray, tier: np.ndarray, shuffle_seed: int | None = None) -> np.ndarray:
    from sklearn.linear_model import RidgeCV

    fit, held = tier != "test", tier == "test"
    x = features
    mu, sd = x[fit].mean(0), x[fit].std(0) + 1e-6
    x = (x - mu) / sd
    y = mean[fit]
    if shuffle_seed is not None:
        y = y[np.random.default_rng(shuffle_seed).permutation(len(y))]
    model = RidgeCV(alphas=np.logspace(0, 6, 13), alpha_per_target=True).fit(x[fit], y)
    return columns_r(model.predict(x[held]), mean[held])


# ---------------------------------------------------------------------- twins
def fit_twin(config: Path, recording, out: Path, name: str, epochs: int | None, limit: float | None) -> torch.nn.Module:
    """Fit ``config`` with its recordings replaced by ``recording`` (a path or ``{name: path}``); best weights."""
    import yaml

    from neuroreg.cli import run_cli

    cfg = yaml.safe_load(config.read_text())
    cfg["data"]["init_args"]["recording"] = recording  # local .h5 files instead of the manifests
    (out / name).mkdir(parents=True, exist_ok=True)
    local = out / name / config.name
    local.write_text(yaml.safe_dump(cfg))
    args = [
        "fit", "--config", str(local),
        f"--trainer.default_root_dir={out / name}",
        f"--trainer.logger.init_args.save_dir={out / 'logs'}",
        f"--trainer.logger.init_args.name={name}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
    ]
    if epochs is not None:
        args.append(f"--trainer.max_epochs={epochs}")
    if limit is not None:
        args.append(f"--trainer.limit_train_batches={limit}")
    cli = run_cli(args)
    best = cli.trainer.checkpoint_callback.best_model_path if cli.trainer.checkpoint_callback else ""
    model = cli.model
    if best:
        model.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    return model.eval()


def twin_r(model, rec: NeuralRecording, dataset: str) -> np.ndarray:
    index, mean, tier = image_tiers(rec)
    held = tier == "test"
    imgs = rec.images_float()[index[held]]
    factor = imgs.shape[2] // model.transform.size[0]
    if factor > 1 and imgs.shape[2] == factor * model.transform.size[0]:
        imgs = block_mean(imgs, factor)  # a twin fitted on block-averaged recordings sees them as it was fitted
    imgs = torch.as_tensor(imgs)
    with torch.no_grad():
        pred = torch.cat([model(imgs[i : i + 256], dataset) for i in range(0, len(imgs), 256)]).numpy()
    return columns_r(pred, mean[held])


# ----------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default=None, help="folder holding cowley2023_v4/ (default $NEUROREG_TEST_DATA, ../shared/data)")
    parser.add_argument("--out", default="runs/bench_twin_real")
    parser.add_argument("--quick", action="store_true", help="1 epoch of 40 batches per twin, single-session twin on 210325 only")
    parser.add_argument("--epochs", type=int, default=None, help="override the configs' max_epochs")
    parser.add_argument("--multi-checkpoint", default=None,
                        help="evaluate this fitted multi-session twin (a checkpoint of the config's fit) instead of fitting one")
    parser.add_argument("--single-sessions", default=None, help="comma-separated sessions that get a single-session twin (default all)")
    args = parser.parse_args(argv)
    logging.getLogger("pytorch_lightning").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=".*does not have many workers.*")
    torch.manual_seed(0)
    folder = data_folder(args.data_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    epochs, limit = (1, 40) if args.quick else (args.epochs, None)
    single_sessions = [CEILING_SESSION] if args.quick else (args.single_sessions.split(",") if args.single_sessions else list(SESSIONS))
    t0 = time.time()
    paths = {s: convert(folder, out, s) for s in SESSIONS}
    recs = {s: NeuralRecording.load(p) for s, p in paths.items()}
    timings: dict[str, float] = {}
    r: dict[str, dict[str, np.ndarray]] = {s: {} for s in SESSIONS}

    t = time.time()
    for s, rec in recs.items():
        index, mean, tier = image_tiers(rec)
        imgs = rec.images_float()[index]
        g = gabor_features(imgs)
        r[s]["gabor_ridge"] = ridge_r(g, mean, tier)
        r[s]["shuffled"] = ridge_r(g, mean, tier, shuffle_seed=0)
        r[s]["pixel_ridge"] = ridge_r(pixel_features(imgs), mean, tier)
    timings["ridges"] = time.time() - t

    t = time.time()
    if args.multi_checkpoint:
        from neuroreg.twin.module import TwinModule

        multi = TwinModule.load_from_checkpoint(args.multi_checkpoint, map_location="cpu").eval()
    else:
        multi = fit_twin(MULTI, {f"s{s}": str(p) for s, p in paths.items()}, out, "multi", epochs, limit)
    for s, rec in recs.items():
        r[s]["multi"] = twin_r(multi, rec, f"s{s}")
    timings["multi"] = time.time() - t

    t = time.time()
    for s in single_sessions:
        model = fit_twin(SINGLE, str(paths[s]), out, f"single_{s}", epochs, limit)
        r[s]["single"] = twin_r(model, recs[s], "default")
    timings["single"] = time.time() - t

    # split-half ceiling of the held-out images (trial-level session)
    rec = recs[CEILING_SESSION]
    _, reps = rec.repeats("test")
    ceiling = split_half_ceiling(reps, seed=0)

    rows = []
    for s in SESSIONS:
        row = {"session": s, "neurons": recs[s].n_neurons, "test_images": int(np.isin(np.arange(recs[s].n_images), recs[s].trial_image[recs[s].trial_tier == "test"]).sum())}
        for m in MODELS:
            row[m] = float(np.nanmedian(r[s][m])) if m in r[s] else None
        row["reference_gabor_ridge_5fold"] = REFERENCE.get(s)
        if s == CEILING_SESSION:
            row["ceiling_median"] = float(np.nanmedian(ceiling))
            for m in MODELS:
                if m in r[s]:
                    ok = np.isfinite(ceiling) & (ceiling > 0)
                    row[f"{m}_fraction_of_ceiling"] = float(np.nanmedian(r[s][m][ok] / ceiling[ok]))
        rows.append(row)
    wins = [row["session"] for row in rows if row["multi"] is not None and row["multi"] > row["gabor_ridge"]]
    summary = {
        "sessions": rows,
        "multi_beats_gabor_ridge_on": wins,
        "multi_beats_gabor_ridge_everywhere": len(wins) == len(rows),
        "quick": args.quick,
        "epochs": epochs,
        "multi_checkpoint": args.multi_checkpoint,
        "timings_s": {k: round(v, 1) for k, v in {**timings, "total": time.time() - t0}.items()},
        "note": "median over neurons of Pearson r on the held-out (test-tier) images; timings under shared CPU load",
    }
    atomic_write(out / "results.json", lambda fh: fh.write(json.dumps(summary, indent=2)))
    fields = list(rows[0].keys() | set().union(*[set(row) for row in rows]))
    fields = ["session", "neurons", "test_images", *MODELS, "reference_gabor_ridge_5fold"] + sorted(
        f for f in fields if f not in ("session", "neurons", "test_images", *MODELS, "reference_gabor_ridge_5fold")
    )

    def write_csv(fh) -> None:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)

    atomic_write(out / "results.csv", write_csv)

    header = f"{'session':>8} {'K':>3} {'test':>4} " + " ".join(f"{m:>11}" for m in MODELS) + f" {'ref(5fold)':>10}"
    print(header)
    for row in rows:
        vals = " ".join(f"{row[m]:11.3f}" if row[m] is not None else f"{'-':>11}" for m in MODELS)
        ref = f"{row['reference_gabor_ridge_5fold']:10.2f}" if row["reference_gabor_ridge_5fold"] else f"{'-':>10}"
        print(f"{row['session']:>8} {row['neurons']:3d} {row['test_images']:4d} {vals} {ref}")
    cs = next(row for row in rows if row["session"] == CEILING_SESSION)
    print(f"{CEILING_SESSION}: split-half ceiling median {cs['ceiling_median']:.3f}; median r/ceiling: "
          + ", ".join(f"{m} {cs[m + '_fraction_of_ceiling']:.3f}" for m in MODELS if m + "_fraction_of_ceiling" in cs))
    print(f"multi-session twin beats the Gabor ridge on {len(wins)}/{len(rows)} sessions; timings (s, shared CPU): {summary['timings_s']}")
    plot(rows, out / "results.png")
    return 0


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4))
    width = 0.8 / len(MODELS)
    x = np.arange(len(rows))
    for i, m in enumerate(MODELS):
        vals = [row[m] if row[m] is not None else np.nan for row in rows]
        ax.bar(x + (i - (len(MODELS) - 1) / 2) * width, vals, width, label=m)
    ax.set_xticks(x, [row["session"] for row in rows])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_ylabel("median r (held-out images)")
    ax.set_title("Cowley 2023 V4: twins vs ridge baselines")
    ax.legend(ncol=len(MODELS), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


if __name__ == "__main__":
    raise SystemExit(main())
