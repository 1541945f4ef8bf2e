import math

import pytest
import torch

from attnlab.nn.embedding import Embeddings
from attnlab.nn.positional import (
    ALiBi,
    LearnedPositionalEmbedding,
    RotaryEmbedding,
    SinusoidalPositionalEncoding,
    alibi_slopes,
    apply_rotary,
    sinusoidal_table,
)


def test_sinusoidal_matches_the_paper_formula() -> None:
    table = sinusoidal_table(50, 16)
    for pos in (0, 1, 7, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_sinusoidal_module_looks_up_positions() -> None:
    module = SinusoidalPositionalEncoding(20, 8)
    positions = torch.tensor([[3, 0, 19]])
    assert torch.equal(module(positions)[0], sinusoidal_table(20, 8)[[3, 0, 19]])


def test_rope_scores_depend_only_on_offset() -> None:
    rope = RotaryEmbedding(head_dim=8, base=100.0)
    q = torch.randn(1, 1, 1, 8)
    k = torch.randn(1, 1, 1, 8)

    def score(m: int, n: int) -> float:
        cos_m, sin_m = rope(torch.tensor([[m]]))
        cos_n, sin_n = rope(torch.tensor([[n]]))
        return (apply_rotary(q, cos_m, sin_m) * apply_rotary(k, cos_n, sin_n)).sum().item()

    for offset in (0, 1, 5):
        ref = score(offset, 0)
        for start in (3, 17, 40):
            assert score(start + offset, start) == pytest.approx(ref, abs=1e-4)
    assert score(5, 0) != pytest.approx(score(1, 0), abs=1e-3)  # and it does depend on it


def test_rope_preserves_norm() -> None:
    rope = RotaryEmbedding(head_dim=16)
    x = torch.randn(2, 3, 5, 16)
    cos, sin = rope(torch.arange(5).expand(2, 5))
    assert torch.allclose(apply_rotary(x, cos, sin).norm(dim=-1), x.norm(dim=-1), atol=1e-5)


def test_alibi_slopes_match_the_paper() -> None:
    assert alibi_slopes(8).tolist() == [2.0**-i for i in range(1, 9)]
    # 6 heads: the 4-head slopes, then every other slope of the 8-head sequence
    expected_6 = [2.0**-2, 2.0**-4, 2.0**-6, 2.0**-8, 2.0**-1, 2.0**-3]
    assert alibi_slopes(6).tolist() == pytest.approx(expected_6)


def test_alibi_bias_is_linear_in_distance_and_cache_aligned() -> None:
    alibi = ALiBi(4)
    bias = alibi(5, 5)
    slopes = alibi_slopes(4)
    assert bias.shape == (1, 4, 5, 5)
    assert bias[0, 1, 4, 1].item() == pytest.approx(-3 * slopes[1].item())
    # the last query row of a cached call equals the last row of the full matrix
    assert torch.equal(alibi(1, 5)[0, :, 0], bias[0, :, 4])


@pytest.mark.parametrize("kind", ["learned", "sinusoidal"])
def test_shared_positions_are_looked_up_once_with_the_same_result(kind: str) -> None:
    # an expanded arange (stride 0 over the batch) takes the (T, D) broadcast path; a
    # materialised copy of the same positions takes the per-row path: same values, same grads
    torch.manual_seed(0)
    if kind == "learned":
        table = LearnedPositionalEmbedding(16, 8)
    else:
        table = SinusoidalPositionalEncoding(16, 8)
    emb = Embeddings(20, 8, positions=table)
    ids = torch.randint(0, 20, (3, 5))
    shared = torch.arange(2, 7).expand(3, 5)
    assert shared.stride(0) == 0
    outs, grads = [], []
    for positions in (shared, shared.clone()):
        emb.zero_grad(set_to_none=True)
        out = emb(ids, positions)
        out.pow(2).sum().backward()
        outs.append(out)
        grads.append([p.grad.clone() for p in emb.parameters()])
    torch.testing.assert_close(outs[0], outs[1])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b)
