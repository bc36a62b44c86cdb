import pytest

from ._reference import dense, problem


@pytest.fixture(scope="session")
def dense_ref():
    """Cached dense references: name -> (model, batches, loss_fn, H, grad, loss)."""
    cache = {}

    def get(name):
        if name not in cache:
            model, batches, loss = problem(name)
            cache[name] = (model, batches, loss) + dense(model, batches, loss)
        return cache[name]

    return get
