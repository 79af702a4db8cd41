"""The measurement list: every shipped measurement obeys the protocol, a new one needs no
edits elsewhere, and the suite's numbers equal an independent re-computation."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from neuroreg.evaluation import sanity
from neuroreg.evaluation.attacks.autoattack import apgd
from neuroreg.evaluation.attacks.decision import hop_skip_jump
from neuroreg.evaluation.attacks.gradient import fgsm, pgd
from neuroreg.evaluation.attacks.minimal import minimal_epsilon
from neuroreg.evaluation.attacks.square import square_attack
from neuroreg.evaluation.callbacks import table
from neuroreg.evaluation.compare import compare
from neuroreg.evaluation.measurements import Clean, Context, Measurement, flatten
from neuroreg.evaluation.perturbations import corrupt, gaussian_noise
from neuroreg.evaluation.report import write_eval_dir
from neuroreg.evaluation.suite import ENSEMBLE_STRENGTH, SUITES, Budget, default_measurements, evaluate, metrics

SHIPPED = list(flatten(default_measurements()))


class Net(nn.Module):
    """A seeded small CNN on 1×8×8 images with 3 classes; its conv layers are brain-layer taps."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 6, 3, stride=2), nn.ReLU())
        self.head = nn.Linear(6, 3)
        self.in_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean((2, 3)))


def data(n: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 3, (n,), generator=g)


def shrink(budget: Budget) -> Budget:
    """``budget`` cut to a few seconds: grids to their first and last value, counts to a few
    images, queries and steps (so a new Budget field needs no edit here); the attack
    ensemble's strength stays (a budget may not cut it)."""
    small: dict[str, Any] = {}
    for f in dataclasses.fields(budget):
        v = getattr(budget, f.name)
        if f.name in ENSEMBLE_STRENGTH:
            continue
        if isinstance(v, tuple) and len(v) > 2:
            small[f.name] = (v[0], v[-1])
        elif isinstance(v, int) and not isinstance(v, bool) and v > 0:
            small[f.name] = min(v, 30 if "queries" in f.name else 4)
    return dataclasses.replace(budget, **{**small, "max_images": 12, "check_images": 6})


#: the full suite's budget (every shipped measurement on), at a tiny size
TINY = shrink(SUITES["full"])


def recording():
    from neuroreg.data.simulated import V1Population

    pop = V1Population(n_neurons=10, image_size=8, seed=0)
    imgs = np.random.default_rng(0).random((24, 1, 8, 8), dtype=np.float32)
    return pop.record(imgs, repeats=3, seed=1, tiers="test")


def rdm_file(folder: Path) -> Path:
    """A 10-image RDMTargets file (RSA against an RDM reads it through the budget)."""
    from neuroreg.targets.rdm import RDMTargets

    rng = np.random.default_rng(0)
    return RDMTargets(rng.integers(0, 256, (10, 1, 8, 8), dtype=np.uint8), np.arange(10), rng.random(45),
                      metric="correlation").save(folder / "rdm.h5")


@pytest.mark.parametrize("m", SHIPPED, ids=[m.name for m in SHIPPED])
def test_every_shipped_measurement_keeps_the_protocol(m: Measurement, tmp_path: Path) -> None:
    assert m.name and m.label and isinstance(m.name, str)
    fields = {f.name for f in dataclasses.fields(Budget)}
    assert set(m.reads) <= fields, set(m.reads) - fields
    assert m.images is None or m.images in fields
    assert m.axis is None or m.axis_label
    x, y = data()
    budget = dataclasses.replace(TINY, rsa_rdm=str(rdm_file(tmp_path)), rsa_layers=("0", "2"))
    ctx = Context(model=Net().eval(), x=x, y=y, budget=budget, seed=1, batch_size=5, measurements=SHIPPED,
                  recording=recording(), brain_layers=["0", "2"])
    ctx.record(Clean())
    assert m.enabled(ctx)
    section = ctx.record(m)
    json.dumps(section, allow_nan=m.nan_to_null)  # strict JSON, unless written with NaN -> null
    scalars = m.scalars(section)
    assert all(k.startswith("eval/") and math.isfinite(v) for k, v in scalars.items()), scalars
    assert set(m.cells(section)) <= set(m.columns)
    if m.axis is not None:
        xs, accs = m.curve(section)
        assert len(xs) == len(accs) > 0 and all(0 <= a <= 1 for a in accs)
    for name, flag in m.checks(section, ctx).items():
        assert isinstance(flag["passed"], bool) and isinstance(flag["detail"], str), name


def test_names_are_unique_and_the_list_is_fresh() -> None:
    names = [m.name for m in SHIPPED]
    assert len(set(names)) == len(names)
    assert default_measurements() is not default_measurements()
    assert names[0] == "clean_accuracy" and names[-1] == "brain"


class Flip(Measurement):
    """A new perturbation defined only here: accuracy on images mirrored left-right with probability p."""

    name = "flip"
    label = "random flip"
    reads = ("noise_sigmas",)  # reuses the noise grid as probabilities
    axis = "p"
    axis_label = "flip probability p"
    panel = 1
    headline = ("eval/flip_accuracy_p=",)
    metric_labels = (("flip_accuracy_p=", "flip p="),)
    columns = ("flip @ max p",)

    def run(self, ctx: Context) -> dict[str, Any]:
        accs = []
        for p in ctx.budget.noise_sigmas:
            g = ctx.gen(7)
            accs.append(ctx.accuracy(lambda x, y: torch.where(
                (torch.rand(len(x), generator=g) < p).view(-1, 1, 1, 1), x.flip(-1), x)))
        return {"p": list(ctx.budget.noise_sigmas), "accuracy": accs}

    def scalars(self, section: dict[str, Any]) -> dict[str, float]:
        return {f"eval/flip_accuracy_p={p:.3g}": float(a) for p, a in zip(section["p"], section["accuracy"])}

    def cells(self, section: dict[str, Any]) -> dict[str, float | bool | None]:
        return {"flip @ max p": section["accuracy"][-1]}

    def rows(self, section: dict[str, Any]) -> list[tuple[str, str, float]]:
        return [("flip", f"p={p:.3g}", a) for p, a in zip(section["p"], section["accuracy"])]


def test_a_new_measurement_is_one_object_in_the_list(tmp_path: Path) -> None:
    from neuroreg.repro.report import is_headline, metric_label

    ms = [*default_measurements(), Flip()]
    x, y = data()
    budget = Budget(max_images=12, noise_sigmas=(0.0, 1.0), linf_epsilons=(0.0, 0.1), pgd_steps=1)
    reports = []
    for seed in (0, 1):
        r = evaluate(Net().eval(), [{"image": x, "label": y}], budget, seed=seed, progress=False, measurements=ms)
        assert r["flip"]["p"] == [0.0, 1.0] and r["flip"]["accuracy"][0] == r["clean_accuracy"]
        assert "flip" in r["timing_s"]
        reports.append(write_eval_dir(r, tmp_path / f"run{seed}"))
    saved = json.loads(reports[0].read_text())
    assert metrics(saved, ms)["eval/flip_accuracy_p=1"] == saved["flip"]["accuracy"][1]
    assert "eval/flip_accuracy_p=1" not in metrics(saved)  # not in the shipped list
    assert "flip" in table(saved, ms)
    assert is_headline("eval/flip_accuracy_p=1", ms) and not is_headline("eval/flip_accuracy_p=0", ms)
    assert metric_label("eval/flip_accuracy_p=1", ms) == "flip p=1"
    paths = compare([], tmp_path / "cmp", groups={"net": reports}, measurements=ms)
    md = paths["md"].read_text()
    assert "flip @ max p" in md.splitlines()[0]
    assert paths["png"].stat().st_size > 1000


def test_suite_numbers_equal_an_independent_recomputation() -> None:
    """The report's numbers come from the attacks with the documented generator streams."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3)).eval()  # small margins: random draws move predictions
    n = 80
    x, _ = data(n)
    with torch.no_grad():
        y = model(x).argmax(1)
    b = dataclasses.replace(TINY, max_images=n, noise_sigmas=(0.0, 0.05, 0.2), autoattack_images=0, pgd_steps=0,
                            corruptions=("gaussian_noise", "contrast"), severities=(1, 3), minimal_images=4,
                            minimal_search_steps=2, square_queries=10,
                            linf_epsilons=(0.0, 4 / 255, 32 / 255), l2_epsilons=(0.0, 0.05, 0.2), large_epsilon=0.25,
                            check_images=80, decision_images=1, decision_queries=200, square_images=40)
    seed = 2
    r = evaluate(model, [{"image": x[:37], "label": y[:37]}, {"image": x[37:], "label": y[37:]}], b, seed=seed,
                 batch_size=30, progress=False)
    gen = lambda k: torch.Generator().manual_seed(seed * 1_000_003 + k)
    chunks = [slice(0, 30), slice(30, 60), slice(60, 80)]

    def ok(images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(images).argmax(1) == labels

    def acc(fn) -> float:
        return sum(int(ok(fn(x[c], y[c]), y[c]).sum()) for c in chunks) / n

    clean = torch.cat([ok(x[c], y[c]) for c in chunks])
    assert r["clean_accuracy"] == int(clean.sum()) / n and r["n_images"] == n
    noise = []
    for s in b.noise_sigmas:
        g = gen(1)
        noise.append(acc(lambda xc, yc: gaussian_noise(xc, s, generator=g)))
    assert r["gaussian_noise"]["accuracy"] == noise
    for j, name in enumerate(b.corruptions):
        per = []
        for sev in b.severities:
            g = gen(100 + j)
            per.append(acc(lambda xc, yc: corrupt(xc, name, sev, generator=g)))
        assert r["corruptions"]["per_corruption"][name]["accuracy"] == per
    for norm, eps_grid, k in (("linf", b.linf_epsilons, 1000), ("l2", b.l2_epsilons, 1001)):
        robust, accs = clean.clone(), []
        for e in sorted(eps_grid):
            g = gen(k)
            for c in chunks:
                robust[c] &= ok(pgd(model, x[c], y[c], e, steps=b.pgd_steps, norm=norm, restarts=b.pgd_restarts,
                                     generator=g, schedule=b.schedule), y[c])
            accs.append(int(robust.sum()) / n)
        assert r[f"pgd_{norm}"]["accuracy"] == accs
        section = r[f"robust_{norm}"]  # the ensemble: each member alone on the images it has not broken yet
        assert set(section["members"]) == {"pgd", "apgd_ce"} and "apgd_t" in section["skipped"]  # 3 classes
        worst = clean.clone()
        for member in ("pgd", "apgd_ce"):
            robust, accs = clean.clone(), []
            g = gen(k + 10)
            for e in sorted(eps_grid):
                todo = robust.nonzero().flatten()
                for s in range(0, len(todo), 30):
                    idx = todo[s: s + 30]
                    adv = (pgd(model, x[idx], y[idx], e, steps=b.pgd_steps, norm=norm, restarts=b.pgd_restarts,
                               generator=g, schedule=b.schedule) if member == "pgd" else
                           apgd(model, x[idx], y[idx], e, norm=norm, loss="ce", steps=100, seed=seed))
                    robust[idx] &= ok(adv, y[idx])
                accs.append(int(robust.sum()) / n)
                if e == max(eps_grid):
                    worst &= robust
            assert section["members"][member] == accs, member
        assert section["accuracy"][-1] == int(worst.sum()) / n == min(section["accuracy"])
    assert r["fgsm_linf"]["accuracy"] == [acc(lambda xc, yc: fgsm(model, xc, yc, e)) for e in b.linf_epsilons]
    l2 = minimal_epsilon(model, x[:4], y[:4], b.minimal_l2_max, norm="l2", steps=b.pgd_steps,
                         search_steps=b.minimal_search_steps, generator=gen(2000))
    assert r["minimal_perturbation"]["l2"]["values"] == [float(v) if math.isfinite(v) else None for v in l2.tolist()]
    dec = hop_skip_jump(model, x[:1], y[:1], b.decision_queries, generator=gen(5000), batch_size=5)
    assert r["decision"]["values"] == [float(v) if math.isfinite(v) else None for v in dec.distance.tolist()]
    big = pgd(model, x, y, b.large_epsilon, steps=b.pgd_steps, generator=gen(3000))
    assert r["sanity"]["large_epsilon"] == sanity.large_epsilon_breaks(ok(big, y).float().mean().item(), 0.25)
    sq = square_attack(model, x[:40], y[:40], max(b.linf_epsilons), n_queries=b.square_queries, seed=seed)
    wb = pgd(model, x[:40], y[:40], max(b.linf_epsilons), steps=b.pgd_steps, restarts=b.pgd_restarts,
             generator=gen(4000), schedule=b.schedule)
    assert r["square"]["accuracy"] == ok(sq, y[:40]).float().mean().item()
    assert r["square"]["pgd_accuracy_same_images"] == ok(wb, y[:40]).float().mean().item()
    assert r["sanity_passed"] == sanity.all_passed(r["sanity"])
    # the recomputation is sensitive: the curves move with the draws (PGD with 0 steps: its random start only)
    assert len(set(noise)) > 1 and len(set(r["pgd_l2"]["accuracy"])) > 1
    assert set(r["sanity"]) == {"monotone_linf", "monotone_l2", "pgd_vs_fgsm", "large_epsilon", "black_box",
                                "decision_vs_white_box", "eot", "gradients", "monotone_robust_linf",
                                "monotone_robust_l2", "robust_linf_stronger_members", "robust_l2_stronger_members",
                                "robust_linf_headline", "robust_l2_headline"}
