"""``model.width`` scales every image network; the ViT: shapes, determinism, width, gradients."""

import pytest
import torch

from oppsig.config import ModelConfig
from oppsig.errors import ConfigError
from oppsig.losses import get_loss
from oppsig.models import build_from_config, build_model


def _n_params(m) -> int:
    return sum(p.numel() for p in m.parameters())


def _conv_channels(m) -> list[int]:
    return [mod.out_channels for mod in m.modules() if isinstance(mod, torch.nn.Conv2d)]


@pytest.mark.parametrize("name", ["cnn", "vgg11", "resnet18", "vit"])
def test_width_shrinks_every_image_network(name):
    kw = {"n_head": 2} if name == "vit" else {}
    small = build_model(name, (3, 32, 32), 10, width=16, **kw)
    big = build_model(name, (3, 32, 32), 10, width=32, **kw)
    assert _n_params(small) < _n_params(big)
    assert small(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_vgg11_channels_follow_width():
    assert _conv_channels(build_model("vgg11", (3, 32, 32), 10)) == [64, 128, 256, 256, 512, 512, 512, 512]
    assert _conv_channels(build_model("vgg11", (3, 32, 32), 10, width=16)) == [16, 32, 64, 64, 128, 128, 128, 128]


def test_cnn_channels_scale_by_width_over_64():
    assert _conv_channels(build_model("cnn", (3, 32, 32), 10)) == [32, 64]
    assert _conv_channels(build_model("cnn", (3, 32, 32), 10, channels=(32, 64), width=16)) == [8, 16]


def test_width_reaches_the_models_from_config():
    for name in ("cnn", "vgg11", "resnet18", "vit"):
        m16 = build_from_config(ModelConfig(name=name, width=16), (3, 32, 32), 10)
        m32 = build_from_config(ModelConfig(name=name, width=32), (3, 32, 32), 10)
        assert _n_params(m16) < _n_params(m32), name


def test_vit_shapes_and_embedding_width():
    m = build_model("vit", (3, 32, 32), 10, width=32, n_layer=3, n_head=4)
    assert m.pos.shape == (1, 65, 32)  # 8 x 8 patches of 4 x 4 pixels, and the class token
    assert len(m.blocks) == 3 and m.blocks[0].attn.n_head == 4
    out = m(torch.randn(5, 3, 32, 32))
    assert out.shape == (5, 10)
    lv = get_loss("ce")(out, torch.randint(0, 10, (5,)))
    assert lv.shape == (5,) and torch.isfinite(lv).all()


def test_vit_is_deterministic_and_attends_to_all_patches():
    torch.manual_seed(0)
    a = build_model("vit", (3, 16, 16), 10, width=16, n_head=2)
    torch.manual_seed(0)
    b = build_model("vit", (3, 16, 16), 10, width=16, n_head=2)
    x = torch.randn(3, 3, 16, 16)
    assert torch.equal(a(x), b(x)) and torch.equal(a(x), a(x))
    # no causal mask: changing the last patch changes the class token's output
    x2 = x.clone()
    x2[:, :, -4:, -4:] += 1.0
    assert not torch.allclose(a(x), a(x2))


def test_vit_gradients_match_finite_differences():
    torch.manual_seed(0)
    m = build_model("vit", (3, 8, 8), 3, width=8, n_layer=1, n_head=2, dtype=torch.float64)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda inp: m(inp), (x,))
    params = dict(m.named_parameters())
    pos = params["pos"].detach().clone().requires_grad_(True)

    def loss_of_pos(p):
        return torch.func.functional_call(m, {**params, "pos": p}, (x.detach(),)).sum()

    assert torch.autograd.gradcheck(loss_of_pos, (pos,))


def test_vit_rejects_bad_shapes():
    with pytest.raises(ConfigError, match="n_head"):
        build_model("vit", (3, 32, 32), 10, width=30, n_head=4)
    with pytest.raises(ConfigError, match="patches"):
        build_model("vit", (3, 30, 30), 10, width=32)
    with pytest.raises(ConfigError, match="model.width"):
        ModelConfig(name="vit", width=30, n_head=4).validate("model")
