import pytest
import torch

from oppsig.errors import ConfigError
from oppsig.losses import get_loss
from oppsig.models import build_model


@pytest.mark.parametrize(
    "name, kw",
    [
        ("mlp", {"widths": (200, 200), "activation": "tanh"}),
        ("mlp", {"widths": (8,), "activation": "relu"}),
        ("cnn", {"channels": (4, 8), "batchnorm": True}),
        ("vgg11", {"batchnorm": False}),
        ("vgg11", {"batchnorm": True}),
        ("resnet18", {"batchnorm": True, "width": 8}),
        ("resnet18", {"batchnorm": False, "width": 8}),
    ],
)
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_image_models_shapes_and_finite_loss(name, kw, loss):
    torch.manual_seed(0)
    m = build_model(name, (3, 32, 32), 10, **kw)
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 10, (4,))
    out = m(x)
    assert out.shape == (4, 10)
    lv = get_loss(loss)(out, y)
    assert lv.shape == (4,) and torch.isfinite(lv).all()


def test_gpt_shapes():
    m = build_model("gpt", (16,), 30, n_layer=1, n_head=2, n_embd=16)
    idx = torch.randint(0, 30, (3, 16))
    out = m(idx)
    assert out.shape == (3, 16, 30)
    lv = get_loss("ce")(out, idx)
    assert lv.shape == (3, 16) and torch.isfinite(lv).all()


def test_fc_tanh_size_and_dtype():
    m = build_model("mlp", (3, 32, 32), 10, dtype=torch.float64)
    assert sum(p.numel() for p in m.parameters()) == 3072 * 200 + 200 + 200 * 200 + 200 + 200 * 10 + 10
    assert next(m.parameters()).dtype == torch.float64


def test_unknown_model_lists_valid():
    with pytest.raises(ConfigError, match="valid: mlp, cnn"):
        build_model("transformer-xl", (3, 32, 32), 10)


def test_mse_is_half_squared_error_to_onehot():
    z = torch.tensor([[1.0, 2.0, 0.0]])
    assert torch.allclose(get_loss("mse")(z, torch.tensor([1])), torch.tensor([0.5 * (1 + 1 + 0)]))
