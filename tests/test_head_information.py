"""scripts/head_information.py's parts: the head as an affine map before its ReLU6, and a stage7 map rebuilt to give
given head features, both against the network's own head module (the reference)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from preimage.representations.efficientnet_lite import efficientnet_lite0_network

_SCRIPTS = Path(__file__).parents[1] / "scripts"
sys.path.insert(0, str(_SCRIPTS))  # the script imports its sibling validation_error
_SPEC = importlib.util.spec_from_file_location("head_information", _SCRIPTS / "head_information.py")
head_information = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(head_information)


@pytest.mark.parametrize("folded", [False, True])  # the script reads Φ's head, whose batch norm is folded
def test_rebuilt_stage7_gives_the_heads_features(folded: bool) -> None:
    head = efficientnet_lite0_network("head", folded=folded).head
    A, c = head_information.head_affine(head)
    z = torch.randn(2, 320, 3, 4, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        h = head(z)
    torch.testing.assert_close(F.relu6(torch.einsum("oi,bihw->bohw", A, z) + c.view(1, -1, 1, 1)), h,
                               atol=1e-4, rtol=1e-4)
    rebuilt = head_information.consistent_stage7(h, A, c, torch.zeros(320), iterations=300)
    assert rebuilt.shape == z.shape
    with torch.no_grad():
        again = head(rebuilt)
    assert float((again - h).norm() / h.norm()) < 1e-4
    assert float((rebuilt - z).norm() / z.norm()) > 0.1  # the head does not pin stage7 down: another map fits it
