"""The robust accuracy of the attack ensemble: a per-image worst case that recomputes from
its per-image outcomes, catches what few-step PGD misses, flags its own inconsistencies,
and budgets that would weaken it are refused."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import nn

from neuroreg.evaluation import sanity
from neuroreg.evaluation.attacks.autoattack import APGD_STANDARD, apgd
from neuroreg.evaluation.measurements import Clean, Context, Ensemble, Measurement, ensemble_per_image
from neuroreg.evaluation.suite import SUITES, Budget, budget_for, evaluate, metrics

EPS = (0.0, 0.02, 0.05, 0.1)


def linear(n_classes: int, scale: float = 1.0, seed: int = 0) -> nn.Module:
    """``scale · (W x + b)`` on 1×4×4 images: a large scale saturates the softmax."""
    torch.manual_seed(seed)
    lin = nn.Linear(16, n_classes)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = lin

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return scale * self.lin(x.flatten(1))

    return Net().eval()


def labelled(model: nn.Module, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Images the model classifies correctly (labels = its predictions)."""
    x = torch.rand(n, 1, 4, 4, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return x, model(x).argmax(1)


def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, budget: Budget, seed: int = 0) -> dict[str, Any]:
    ctx = Context(model=model, x=x, y=y, budget=budget, seed=seed, batch_size=64)
    ctx.record(Clean())
    return ctx.record(Ensemble("linf"))


def test_the_ensemble_is_the_per_image_worst_case_and_recomputes_from_per_image() -> None:
    model = linear(5)
    x, y = labelled(model, 40)
    y[:4] = (y[:4] + 1) % 5  # a few images wrong from the start: robust nowhere
    section = run(model, x, y, Budget(linf_epsilons=(0.1, 0.0, 0.05, 0.02), pgd_steps=3, robust_images=None))
    assert list(section["members"]) == ["pgd", "apgd_ce", "apgd_t"] and section["flavour"] == "standard"
    assert section["n_images"] == 40 and section["epsilon"] == [0.1, 0.0, 0.05, 0.02]  # the caller's order
    per = section["per_image"]
    order = sorted(range(4), key=section["epsilon"].__getitem__)
    for name, rows in per.items():
        assert all(len(r) == 40 for r in rows)
        assert all(r[j] == 0 for r in rows for j in range(4))  # misclassified clean
        for a, b in zip(order, order[1:]):  # cumulative: robust at a larger ε only if robust at the smaller
            assert all(rb <= ra for ra, rb in zip(rows[a], rows[b])), name
        assert section["members"][name] == [sum(r) / 40 for r in rows]
    ens = ensemble_per_image(per)
    assert section["accuracy"] == [sum(r) / 40 for r in ens]  # recomputed from per_image
    for i in range(4):  # per image and per ε, the ensemble is <= every member
        for name, rows in per.items():
            assert all(e <= m for e, m in zip(ens[i], rows[i])), (name, i)
            assert section["accuracy"][i] <= section["members"][name][i]
    assert section["accuracy"][order[0]] == 36 / 40  # ε = 0: the clean accuracy
    assert 0 < section["accuracy"][order[-1]] < section["accuracy"][order[1]] < 36 / 40  # the curve moves
    m = Ensemble("linf")
    scalars = m.scalars(section)
    assert scalars["eval/robust_linf_accuracy_eps=0.05"] == section["accuracy"][2]
    assert scalars["eval/robust_linf/apgd_t_accuracy_eps=0.1"] == section["members"]["apgd_t"][0]
    checks = m.checks(section, None)
    assert all(c["passed"] for c in checks.values()), checks


def test_apgd_members_equal_the_apgd_attack_run_on_the_unbroken_images() -> None:
    model = linear(4)
    x, y = labelled(model, 12)
    section = run(model, x, y, Budget(linf_epsilons=(0.0, 0.05), pgd_steps=1), seed=3)
    adv = apgd(model, x, y, 0.05, loss="dlr-targeted", targets=9, seed=3)  # 3 targets: min(9, C - 1)
    with torch.no_grad():
        assert section["per_image"]["apgd_t"][1] == (model(adv).argmax(1) == y).int().tolist()


def test_apgd_catches_a_saturated_softmax_that_few_step_pgd_misses() -> None:
    """Logits × 10⁴: the cross-entropy gradient is exactly 0 at a correct image (masked),
    so PGD-CE only tries its random start; APGD-T's DLR loss is scale-invariant."""
    model = linear(5, scale=1e4, seed=1)
    x, y = labelled(model, 48, seed=1)
    section = run(model, x, y, Budget(linf_epsilons=(0.0, 0.1), pgd_steps=10, robust_images=None))
    pgd_acc, apgd_t = section["members"]["pgd"][1], section["members"]["apgd_t"][1]
    assert pgd_acc > 0.5 and apgd_t <= pgd_acc - 0.4, section["members"]
    assert section["accuracy"][1] == min(a[1] for a in section["members"].values())
    # the same model unscaled: PGD gets gradients and breaks about as many images as APGD-T
    plain = run(linear(5, seed=1), x, y, Budget(linf_epsilons=(0.0, 0.1), pgd_steps=10, robust_images=None))
    assert plain["members"]["pgd"][1] <= apgd_t + 0.1
    # the loss is 0 where the gradient vanishes, so the input-gradient check does not see it: the ensemble does
    assert sanity.input_gradients(model, x, y)["passed"]


def crafted(members: dict[str, list[float]], headline: list[float]) -> dict[str, Any]:
    return {"epsilon": [0.0, 0.01], "accuracy": headline, "members": members, "n_images": 100}


def test_sanity_flags_a_stronger_member_weaker_than_pgd_and_a_member_below_the_headline() -> None:
    m = Ensemble("linf")
    good = crafted({"pgd": [0.9, 0.5], "apgd_ce": [0.9, 0.45], "apgd_t": [0.9, 0.51]}, [0.9, 0.44])
    assert all(c["passed"] for c in m.checks(good, None).values())
    stronger_worse = crafted({"pgd": [0.9, 0.5], "apgd_ce": [0.9, 0.53], "apgd_t": [0.9, 0.4]}, [0.9, 0.4])
    flags = m.checks(stronger_worse, None)
    assert not flags["robust_linf_stronger_members"]["passed"]
    assert "apgd_ce 0.530 > pgd 0.500" in flags["robust_linf_stronger_members"]["detail"]
    assert flags["robust_linf_headline"]["passed"]
    wrong_headline = crafted({"pgd": [0.9, 0.5], "apgd_ce": [0.9, 0.45], "apgd_t": [0.9, 0.47]}, [0.9, 0.46])
    flags = m.checks(wrong_headline, None)
    assert not flags["robust_linf_headline"]["passed"] and "apgd_ce 0.450 < headline 0.460" in \
        flags["robust_linf_headline"]["detail"]
    assert flags["robust_linf_stronger_members"]["passed"]


def test_a_stochastic_model_gets_the_rand_flavour_with_eot() -> None:
    base = linear(4)

    class Noisy(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return base(x) + 0.01 * torch.randn(len(x), 4)

    model = Noisy().eval()
    x, y = labelled(base, 8)
    ctx = Context(model=model, x=x, y=y, budget=Budget(linf_epsilons=(0.0, 0.05), pgd_steps=1, eot_samples=2,
                                                       apgd_eot_samples=20), batch_size=8)
    ctx.record(Clean())
    section = ctx.record(Ensemble("linf"))
    assert ctx.stochastic and section["flavour"] == "rand" and list(section["members"]) == ["pgd", "apgd_ce", "apgd_dlr"]


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("apgd_steps", 10, r"'apgd_steps'.*>= 100.*found 10"),
        ("apgd_restarts", 0, r"'apgd_restarts'.*>= 1"),
        ("apgd_targets", 3, r"'apgd_targets'.*>= 9.*found 3"),
        ("apgd_eot_samples", 4, r"'apgd_eot_samples'.*>= 20"),
        ("robust_images", 0, r"'robust_images'.*cannot be turned off.*found 0"),
        ("linf_epsilons", (0.0, 8.0), r"'linf_epsilons'.*\[0.0, 1.0\].*found 8.0"),
        ("l2_epsilons", (-0.5,), r"'l2_epsilons'.*found -0.5"),
        ("corruptions", ("fog", "smudge"), r"'corruptions'.*found unknown \['smudge'\]"),
        ("severities", (0, 3), r"'severities'.*1..5.*found \[0\]"),
        ("large_epsilon", 2.0, r"'large_epsilon'.*found 2.0"),
    ],
)
def test_a_budget_that_weakens_the_ensemble_or_is_out_of_range_is_refused(field: str, value: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Budget(**{field: value})
    with pytest.raises(ValueError, match=match):
        budget_for("quick", **{field: value})


def test_budget_for_names_an_unknown_field_and_every_suite_keeps_the_ensemble() -> None:
    with pytest.raises(ValueError, match=r"unknown \['pgd_stepz'\]"):
        budget_for("quick", pgd_stepz=3)
    for name, b in SUITES.items():
        assert b.linf_epsilons and all(getattr(b, f"apgd_{k}") >= v for k, v in APGD_STANDARD.items()), name
        assert dataclasses.replace(b) == b


def test_unknown_brain_layers_are_refused_before_any_measurement() -> None:
    ran: list[str] = []

    class Spy(Measurement):
        name = "spy"
        label = "spy"

        def run(self, ctx: Context) -> float:
            ran.append(self.name)
            return 0.0

    model = linear(3)
    batch = {"image": torch.rand(4, 1, 4, 4), "label": torch.zeros(4, dtype=torch.long)}
    with pytest.raises(ValueError, match=r"brain_layers: expected module paths of the Net \(lin\), found unknown \['layer9'\]"):
        evaluate(model, [batch], Budget(), recording=object(), brain_layers=["lin", "layer9"], measurements=[Spy()],
                 progress=False)
    assert ran == []


def test_metrics_hold_the_ensemble_headline_and_its_members() -> None:
    section = crafted({"pgd": [0.9, 0.5], "apgd_ce": [0.9, 0.45]}, [0.9, 0.44])
    m = metrics({"clean_accuracy": 0.9, "robust_linf": section})
    assert m["eval/robust_linf_accuracy_eps=0.01"] == 0.44 and m["eval/robust_linf/pgd_accuracy_eps=0.01"] == 0.5


def test_robust_images_cuts_the_images_not_the_strength() -> None:
    model = linear(4)
    x, y = labelled(model, 12)
    section = run(model, x, y, Budget(linf_epsilons=(0.0, 0.05), pgd_steps=1, robust_images=5))
    assert section["n_images"] == 5 and all(len(r) == 5 for rows in section["per_image"].values() for r in rows)
    assert section["apgd_steps"] == 100 and section["apgd_targets"] == 9
