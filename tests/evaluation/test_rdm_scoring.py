"""RSA scoring against an RDM: the rank correlations, the bootstrap interval, the missing
ceiling, and the rsa_rdm measurement inside the suite."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.distance import pdist, squareform
from scipy.stats import kendalltau
from torch import nn

from neuroreg.evaluation.brain import NO_CEILING_REASON, compare_rdms, kendall_tau_a, layer_activations, rdm_similarity
from neuroreg.evaluation.suite import Budget, evaluate, metrics
from neuroreg.regularizers.functional import rdm
from neuroreg.targets.rdm import RDMTargets, condensed


def test_kendall_tau_a_matches_a_naive_count_and_does_not_correct_for_ties():
    rng = np.random.default_rng(0)
    a, b = rng.random(40), rng.random(40)
    b[:10] = b[0]  # ties
    naive = sum(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]) for i, j in itertools.combinations(range(40), 2)) / (40 * 39 / 2)
    assert kendall_tau_a(a, b, block=7) == pytest.approx(naive, abs=1e-12)
    assert abs(kendall_tau_a(a, b)) < abs(kendalltau(a, b).statistic)  # τ_b divides by fewer pairs when tied


def test_identical_rdm_scores_one_shuffled_about_zero_and_the_interval_brackets_the_estimate():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 30))
    d = pdist(x, "correlation")
    same = compare_rdms(d, d, n_bootstrap=100)
    assert same["score"] == pytest.approx(1.0) and same["ci_low"] == pytest.approx(1.0)
    perm = rng.permutation(40)
    shuffled = squareform(d)[np.ix_(perm, perm)][np.triu_indices(40, 1)]
    out = compare_rdms(shuffled, d, n_bootstrap=200, seed=2)
    assert abs(out["score"]) < 0.1
    noisy = d + rng.normal(0, 0.1, d.shape).clip(-d, None)
    res = compare_rdms(noisy, d, n_bootstrap=300, seed=0)
    assert 0.3 < res["score"] < 0.99
    assert res["ci_low"] < res["score"] < res["ci_high"] and res["ci_high"] - res["ci_low"] < 0.3
    tau = compare_rdms(noisy, d, method="kendall_tau_a", n_bootstrap=20)
    assert 0 < tau["score"] < res["score"]  # τ is smaller than ρ for the same ordering agreement
    assert compare_rdms(noisy, d, n_bootstrap=0)["ci_low"] is None
    with pytest.raises(ValueError, match="expected RDMs of one length, found 780 \\(model\\) and 779 \\(neural\\)"):
        compare_rdms(d, d[:-1])
    with pytest.raises(ValueError, match="expected a condensed RDM of n\\(n-1\\)/2 values"):
        compare_rdms(d[:-1], d[:-1])
    with pytest.raises(ValueError, match="method: expected 'spearman' or 'kendall_tau_a'"):
        compare_rdms(d, d, method="pearson")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Sequential(nn.Conv2d(1, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, stride=2), nn.ReLU())
        self.head = nn.Linear(8, 3)
        self.in_channels = 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x).mean((2, 3)))


def own_layer_rdm(model: nn.Module, layer: str, n: int = 16) -> RDMTargets:
    """An RDM that is exactly ``model``'s ``layer`` RDM over its (grey, 8x8) images."""
    images = np.random.default_rng(3).integers(0, 256, (n, 1, 8, 8), dtype=np.uint8)
    acts = layer_activations(model, torch.from_numpy(images.astype(np.float32) / 255), [layer])
    return RDMTargets(images, np.arange(n), condensed(rdm(torch.as_tensor(acts[layer]))), metric="correlation",
                      species="macaque", area="IT")


def test_rdm_similarity_finds_the_layer_the_rdm_came_from(tmp_path):
    model = Net().eval()
    target = own_layer_rdm(model, "2")
    out = rdm_similarity(model, target, ["0", "2"], n_bootstrap=50)
    assert out["score"][1] == pytest.approx(1.0, abs=1e-6) and out["score"][0] < 0.99
    assert out["label"] == "RSA vs IT RDM" and out["n_images"] == 16 and out["metric"] == "correlation"
    assert out["ceiling"] is None and out["ceiling_reason"] == NO_CEILING_REASON
    assert all(lo <= s <= hi for s, lo, hi in zip(out["score"], out["ci_low"], out["ci_high"]))
    path = target.save(tmp_path / "it.h5")
    assert rdm_similarity(model, str(path), ["2"], n_bootstrap=0)["score"][0] == pytest.approx(1.0, abs=1e-6)
    euclid = RDMTargets(target.images, target.image_ids, target.rdm, metric="euclidean")
    with pytest.raises(ValueError, match="metric 'euclidean': expected one of \\['correlation', 'cosine'\\]"):
        rdm_similarity(model, euclid, ["2"])


def test_the_suite_reports_rsa_against_an_rdm_per_layer(tmp_path):
    model = Net().eval()
    path = own_layer_rdm(model, "2").save(tmp_path / "it.h5")
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand(8, 1, 8, 8, generator=g), "label": torch.randint(0, 3, (8,), generator=g)}
    budget = Budget(noise_sigmas=(), linf_epsilons=(), fgsm=False, robust_images=None, rsa_rdm=str(path),
                    rsa_layers=("0", "2"), rsa_bootstrap=20)
    report = evaluate(model, [batch], budget, progress=False)
    section = report["rsa_rdm"]
    assert section["layers"] == ["0", "2"] and section["ceiling"] is None
    scalars = metrics(report)
    assert scalars["eval/rsa_rdm=2"] == pytest.approx(1.0, abs=1e-6) and "eval/rsa_rdm=0" in scalars
    from neuroreg.evaluation.measurements import RDMBrain

    assert RDMBrain().cells(section) == {"RSA vs RDM (last layer)": section["score"][-1]}
    assert "noise ceiling: only the averaged RDM" in RDMBrain().lines(section)[0]
    with pytest.raises(ValueError, match="brain_layers: expected module paths of the Sequential .* found unknown \\['9'\\]"):
        evaluate(model, [batch], Budget(rsa_rdm=str(path), rsa_layers=("9",)), progress=False)
    with pytest.raises(ValueError, match="fields 'rsa_rdm' and 'rsa_layers' go together"):
        Budget(rsa_rdm=str(path))
    with pytest.raises(ValueError, match="field 'rsa_bootstrap' must be an integer >= 0"):
        Budget(rsa_bootstrap=-1)
