"""The representation registry: names, errors, and params that rebuild the same representation."""
import pytest
import torch

from preimage import build_representation, list_representations


def test_unknown_spec_lists_valid_ones() -> None:
    with pytest.raises(ValueError, match="valid: hog, hogb, dsift"):
        build_representation("surf")
    with pytest.raises(ValueError, match="hog"):
        build_representation("hog", cel_size=4)


@pytest.mark.parametrize("spec,overrides", [("hog", {"cell_size": 4}), ("hogb", {"orientations": 6, "texture": False}),
                                            ("dsift", {"bin_size": 4, "step": 6}), ("sift", {"cell_size": 8}),
                                            ("caffenet:conv2", {"weights": "random"})])
def test_params_rebuild_the_same_representation(spec: str, overrides: dict) -> None:
    rep = build_representation(spec, **overrides)
    again = build_representation(spec, **rep.params)
    assert again.params == rep.params and again.spec == spec
    x = torch.rand(1, 3, 70, 70)
    assert torch.equal(rep(x), again(x))


def test_frozen_and_eval() -> None:
    rep = build_representation("caffenet:conv1", weights="random")
    rep.train()
    assert not rep.training and all(not p.requires_grad for p in rep.parameters())
    assert len(list_representations()) == 5 + 18 + 20 + 12  # hog hogb dsift lbp sift, alexnet, caffenet, efficientnet_lite0 (11 layers + prob)
