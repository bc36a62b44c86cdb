from ..signals.conftest import planted  # noqa: F401 - the planted-pairs fixture, shared with the signals tests
