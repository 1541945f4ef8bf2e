import torch

from attnlab.nn.masks import (
    causal_mask,
    combine_masks,
    padding_mask,
    positions_from_attention_mask,
    to_additive,
)


def test_causal_mask_square_is_lower_triangular() -> None:
    assert torch.equal(causal_mask(4), torch.ones(4, 4).tril().bool())


def test_causal_mask_is_bottom_right_aligned_with_cache() -> None:
    mask = causal_mask(2, 5)  # 3 cached positions, 2 new queries at positions 3 and 4
    expected = torch.tensor([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]]).bool()
    assert torch.equal(mask, expected)


def test_padding_and_combine() -> None:
    attention_mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    pad = padding_mask(attention_mask)
    assert pad.shape == (2, 1, 1, 3)
    both = combine_masks(pad, causal_mask(3), None)
    assert both.shape == (2, 1, 3, 3)
    assert not both[0, 0, 2, 2]  # padding key
    assert not both[1, 0, 0, 1]  # future key
    assert both[1, 0, 2, 2]
    assert combine_masks(None, None) is None


def test_to_additive_is_zero_where_allowed_and_very_negative_elsewhere() -> None:
    additive = to_additive(torch.tensor([True, False]), torch.float32)
    assert additive[0] == 0
    assert additive[1] == torch.finfo(torch.float32).min


def test_positions_skip_left_padding() -> None:
    positions = positions_from_attention_mask(torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]]))
    assert positions.tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 3, 4]]
