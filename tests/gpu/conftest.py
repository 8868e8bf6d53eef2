"""The `gpu` tier: runs only where CUDA is available (skipped, not failed, everywhere else).

    pytest tests/gpu          # on a GPU machine; see README "From laptop to cluster" for the recipe

The GPU image used for this tier has no alibi-detect (it pins numpy<2): these tests run serving with
drift.enabled=false and never import the drift detectors.
"""

import pytest


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip = pytest.mark.skip(reason="needs CUDA (the gpu tier runs on a GPU machine)")
    cuda = _cuda()
    for item in items:
        if "tests/gpu/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.gpu)
            if not cuda:
                item.add_marker(skip)
