"""Doctests of src/oppsig: every example gets ``tmp_path`` (a fresh folder) and ``torch``/``np`` in its namespace."""

import numpy as np
import pytest
import torch


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace, tmp_path):
    doctest_namespace.update(tmp_path=tmp_path, torch=torch, np=np)
