import pytest
import torch

from neuroreg.regularizers import SimilarityRegularizer
from neuroreg.regularizers import functional as F


def test_single_layer_loss_equals_functional():
    feats = torch.randn(10, 4, 3, 3)
    targets = torch.rand(10, 20)
    reg = SimilarityRegularizer(["layer1"])
    out = reg({"layer1": feats}, targets)
    expected = F.similarity_loss(F.cosine_similarity_matrix(feats), F.cosine_similarity_matrix(targets))
    torch.testing.assert_close(out["loss"], expected)
    assert float(out["layer_weight/layer1"]) == 1.0


def test_layer_weights_are_softmax_and_learned():
    reg = SimilarityRegularizer(["a", "b"])
    targets = torch.rand(12, 30)
    feats = {"a": targets @ torch.randn(30, 30), "b": torch.randn(12, 30)}  # "a" is linearly tied to targets
    opt = torch.optim.SGD(reg.parameters(), lr=1.0)
    for _ in range(50):
        opt.zero_grad()
        reg(feats, targets)["loss"].backward()
        opt.step()
    out = reg(feats, targets)
    wa, wb = float(out["layer_weight/a"]), float(out["layer_weight/b"])
    assert wa + wb == pytest.approx(1.0)
    assert wa > wb  # the layer carrying the neural geometry wins


def test_nan_targets_are_masked_not_propagated():
    feats = torch.randn(8, 16, requires_grad=True)
    targets = torch.rand(8, 10)
    targets[0, 3] = float("nan")
    targets[:, 9] = float("nan")
    out = SimilarityRegularizer(["x"])({"x": feats}, targets)
    out["loss"].backward()
    assert torch.isfinite(out["loss"]) and torch.isfinite(feats.grad).all()


def test_regularizing_features_toward_targets_lowers_loss_and_raises_agreement():
    torch.manual_seed(0)
    targets = torch.rand(32, 40)
    feats = torch.randn(32, 16, requires_grad=True)
    reg = SimilarityRegularizer(["x"])
    first = reg({"x": feats}, targets)
    opt = torch.optim.Adam([feats], lr=0.05)
    for _ in range(200):
        opt.zero_grad()
        reg({"x": feats}, targets)["loss"].backward()
        opt.step()
    last = reg({"x": feats}, targets)
    assert float(last["loss"]) < 0.2 * float(first["loss"])
    assert float(last["neural_model_corr"]) > 0.9 > float(first["neural_model_corr"])


@pytest.mark.parametrize("kwargs, msg", [({"layers": []}, "at least one"), ({"layers": ["a"], "weight": -1}, "weight"),
                                          ({"layers": ["a"], "clamp": 2.0}, "clamp")])
def test_bad_arguments(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        SimilarityRegularizer(**kwargs)


def test_batch_of_one_is_refused_clearly():
    with pytest.raises(ValueError, match="expected >= 2 images, found 1"):
        SimilarityRegularizer(["x"])({"x": torch.randn(1, 5)}, torch.rand(1, 3))
