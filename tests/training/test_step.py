import torch

from oppsig.losses import get_loss
from oppsig.models import build_model
from oppsig.training import full_batch_backward


def grads(model):
    return torch.cat([p.grad.reshape(-1) for p in model.parameters()])


def test_physical_batches_equal_one_big_batch():
    torch.manual_seed(0)
    x, y = torch.randn(203, 3, 8, 8), torch.randint(0, 10, (203,))
    for loss in ("ce", "mse"):
        m = build_model("mlp", (3, 8, 8), 10, widths=(32, 32))
        fn = get_loss(loss)
        l1, c1, _ = full_batch_backward(m, x, y, fn, physical_batch_size=203)
        g1 = grads(m).clone()
        m.zero_grad(set_to_none=True)
        l2, c2, _ = full_batch_backward(m, x, y, fn, physical_batch_size=17)
        g2 = grads(m)
        assert torch.allclose(g1, g2, atol=1e-6, rtol=0)
        assert torch.equal(c1, c2) and torch.allclose(l1, l2, atol=1e-6)
        # and equal to the plain mean-reduced loss
        m.zero_grad(set_to_none=True)
        fn(m(x), y).mean().backward()
        assert torch.allclose(grads(m), g1, atol=1e-6, rtol=0)


def test_rows_select_a_minibatch():
    torch.manual_seed(0)
    x, y = torch.randn(50, 4), torch.randint(0, 3, (50,))
    m = build_model("mlp", (4,), 3, widths=(5,))
    rows = torch.tensor([3, 7, 9, 20])
    losses, _, _ = full_batch_backward(m, x, y, get_loss("ce"), 3, rows=rows)
    ref = get_loss("ce")(m(x[rows]), y[rows])
    assert torch.allclose(losses, ref.detach())


class _FixedLogits(torch.nn.Module):
    """Sequence model whose logits are x itself (B, T, C) plus a zero bias, so predictions are known."""

    def __init__(self, c):
        super().__init__()
        self.bias = torch.nn.Parameter(torch.zeros(c))

    def forward(self, x):
        return x + self.bias


def test_sequence_accuracy_is_the_share_of_tokens_predicted_right():
    # 4 sequences of 5 tokens over 3 classes; sequence i has exactly i tokens right (a majority rule gives 0 or 1)
    T, C = 5, 3
    y = torch.zeros(4, T, dtype=torch.long)
    x = torch.full((4, T, C), -5.0)
    for i in range(4):
        x[i, :i, 0] = 5.0  # argmax 0 = target
        x[i, i:, 1] = 5.0  # argmax 1 != target
    _, acc, _ = full_batch_backward(_FixedLogits(C), x, y, get_loss("ce"), physical_batch_size=3)
    assert acc.dtype == torch.float32
    assert torch.allclose(acc, torch.tensor([0.0, 0.2, 0.4, 0.6]))
    assert abs(float(acc.mean()) - 6 / 20) < 1e-7  # token accuracy over all 20 targets


def test_classification_accuracy_is_zero_or_one():
    torch.manual_seed(0)
    x, y = torch.randn(30, 4), torch.randint(0, 3, (30,))
    m = build_model("mlp", (4,), 3, widths=(5,))
    _, acc, _ = full_batch_backward(m, x, y, get_loss("ce"), 7)
    assert torch.equal(acc, (m(x).argmax(-1) == y).float())


def test_batch_rows_are_the_epochs_permutation_and_a_caller_cannot_change_them():
    """Every step's rows are its slice of the epoch's seeded permutation (kept for the epoch's steps); rows handed out
    are copies, so writing into them leaves every later step's rows as they were."""
    from oppsig.training import batch_rows

    n, b = 10, 4
    epoch1 = torch.cat([batch_rows(s, n, b, seed=3, device="cpu") for s in range(3, 6)])
    assert sorted(epoch1.tolist()) == list(range(n))
    rows = batch_rows(3, n, b, seed=3, device="cpu")
    rows[:] = -1
    assert torch.equal(batch_rows(3, n, b, seed=3, device="cpu"), epoch1[:b])
    assert not torch.equal(batch_rows(0, n, b, seed=3, device="cpu"), epoch1[:b])  # another epoch, another order
