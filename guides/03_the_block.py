# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 3. The block
#
# A Transformer is a stack of identical blocks. Each block has two sub-layers: the
# attention of guide 2, where tokens exchange information, and a **position-wise
# feed-forward network**, where each token's vector is transformed on its own. Around each
# sub-layer sit a **residual connection** (the sub-layer's output is *added* to its input)
# and a **layer normalization**. This guide writes the block out in a few lines, checks it
# against attnlab's `DecoderBlock`, then trains small character-level language models on
# Tiny Shakespeare with each of the three parts removed in turn, so you can see what each
# one is for.
#
# `ATTNLAB_FAST=1` (the test suite) trains for 30 steps of 16 windows instead of 300 of
# 32, on a slice of the corpus; the assertions check the same ordering, and a looser bound
# on the loss the full block reaches.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from attnlab import ModelConfig, build_model
from attnlab.config.fast import fast_mode
from attnlab.data import random_windows, read_text, split_tokens
from attnlab.nn import MLP, BlockOutput
from attnlab.tokenizers import train_char_tokenizer

FAST = fast_mode()
STEPS = 30 if FAST else 300
BATCH = 16 if FAST else 32  # windows of 64 characters per step
LR = 1e-2
torch.manual_seed(0)
torch.set_num_threads(min(2, torch.get_num_threads()))

# %% [markdown]
# ## The three parts
#
# **Feed-forward network.** Two linear maps with a non-linearity between them, applied to
# every position separately (the same weights for all): `FFN(x) = W2 gelu(W1 x + b1) + b2`,
# with an inner width 4 times the model's. Attention only mixes vectors (a weighted
# average); the FFN is where most of the computation on each token's content happens, and
# it holds about two thirds of a block's parameters. The cell shows that it really treats
# positions one by one: running it on a whole sequence or on each vector alone gives the
# same numbers.

# %%
ffn = MLP(64, 256, activation="gelu")
seq = torch.randn(1, 10, 64)  # (B, T, D)
one_by_one = torch.cat([ffn(seq[:, t : t + 1]) for t in range(10)], dim=1)
assert torch.allclose(ffn(seq), one_by_one, atol=1e-6)
attention_params = 4 * 64 * 64 + 4 * 64  # Q, K, V and output projections with biases
ffn_params = sum(p.numel() for p in ffn.parameters())
print(f"FFN parameters: {ffn_params:,}, attention parameters: {attention_params:,}")
assert abs(ffn_params / (ffn_params + attention_params) - 2 / 3) < 0.01

# %% [markdown]
# **Residual connection.** `x + sublayer(x)` instead of `sublayer(x)`: each sub-layer only
# has to learn a *change* to its input, and the gradient flows back through the `+`
# unchanged, however many blocks are stacked. **Layer normalization** rescales each
# token's vector to mean 0 and variance 1 (then applies a learned scale and shift), which
# keeps the numbers in a range where training is stable. attnlab, like GPT-2 and Llama,
# puts the norm *before* each sub-layer ("pre-norm"): `x + sublayer(norm(x))`; the
# original Transformer and BERT put it after the addition ("post-norm",
# `norm(x + sublayer(x))`).
#
# Here is the whole block, written out with switches to remove each part. It reuses the
# sub-modules (and so the weights) of one of attnlab's blocks, and with every part on it
# computes exactly what that block computes.


# %%
class Block(nn.Module):
    """A pre-norm decoder block, spelled out; ffn/residual/norm=False remove that part."""

    def __init__(
        self, parts: nn.Module, ffn: bool = True, residual: bool = True, norm: bool = True
    ):
        super().__init__()
        self.attention, self.ffn = parts.self_attn, parts.feed_forward
        self.norm1 = parts.norm_attn if norm else nn.Identity()
        self.norm2 = parts.norm_ff if norm else nn.Identity()
        self.use_ffn, self.residual = ffn, residual

    def forward(self, x: torch.Tensor, **unused) -> BlockOutput:
        a = self.attention(self.norm1(x), causal=True).output  # tokens exchange information
        x = x + a if self.residual else a
        if self.use_ffn:
            f = self.ffn(self.norm2(x))  # each token on its own
            x = x + f if self.residual else f
        return BlockOutput(x)


reference = build_model(ModelConfig(family="decoder", vocab_size=50, d_model=64, n_heads=4))
attnlab_block = reference.stack.blocks[0]
x = torch.randn(2, 12, 64)
assert torch.allclose(
    Block(attnlab_block)(x).hidden, attnlab_block(x, causal=True).hidden, atol=1e-6
)
print("the block written out = attnlab's DecoderBlock")

# %% [markdown]
# ## Four small trainings
#
# A 6-layer character-level model of width 64 (about 300,000 parameters), trained on Tiny
# Shakespeare with the same initial weights and the same batches four times: with the full
# block, without the FFN, without residual connections, and without layer norms. The loss
# is the cross-entropy of the next character on held-out text; before training it is about
# `ln(vocabulary) = 4.2` (a uniform guess).

# %%
text = read_text("shakespeare")
tokenizer = train_char_tokenizer(text)
ids = np.array(tokenizer.encode(text), dtype=np.int32)
splits = split_tokens(ids, val_fraction=0.1)
config = ModelConfig(
    family="decoder",
    vocab_size=tokenizer.vocab_size,
    d_model=64,
    n_heads=4,
    n_layers=6,
    max_seq_len=64,
)
val_gen = torch.Generator().manual_seed(1)
val_batches = [random_windows(splits.val, 32, 64, val_gen) for _ in range(2 if FAST else 4)]


def make_model(**switches: bool) -> nn.Module:
    torch.manual_seed(0)  # the same initial weights for every variant
    model = build_model(config)
    model.stack.blocks = nn.ModuleList(Block(b, **switches) for b in model.stack.blocks)
    if not switches.get("norm", True):
        model.stack.final_norm = None
    return model


@torch.no_grad()
def val_loss(model: nn.Module) -> float:
    model.eval()
    losses = [model(x, targets=y).loss.item() for x, y in val_batches]
    model.train()
    return sum(losses) / len(losses)


def train(model: nn.Module, steps: int = STEPS) -> list[tuple[int, float]]:
    gen = torch.Generator().manual_seed(0)  # the same batches for every variant
    optimizer = torch.optim.AdamW(model.parameters(), lr=LR)
    warmup = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20))
    curve = [(0, val_loss(model))]
    for step in range(1, steps + 1):
        x, y = random_windows(splits.train, BATCH, 64, gen)  # (B, T) inputs and next tokens
        loss = model(x, targets=y).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        warmup.step()
        if step % (steps // (5 if FAST else 10)) == 0:
            curve.append((step, val_loss(model)))
    return curve


n_params = make_model().num_parameters()
print(f"{n_params:,} parameters")
assert abs(n_params - 300_000) < 30_000

variants = {
    "full block": {},
    "no feed-forward": {"ffn": False},
    "no residual": {"residual": False},
    "no layer norm": {"norm": False},
}
curves = {}
start = time.perf_counter()
for name, switches in variants.items():
    curves[name] = train(make_model(**switches))
    print(f"{name:16s} val loss {curves[name][-1][1]:.3f}")
print(f"{time.perf_counter() - start:.0f} s for the four trainings")
print("uniform guess:", round(float(np.log(tokenizer.vocab_size)), 2))
assert abs(curves["full block"][0][1] - np.log(tokenizer.vocab_size)) < 0.1

# %% [markdown]
# ## Loss curves side by side
#
# Below you will see the four validation-loss curves (a curve that leaves the top of the
# plot or stops has blown up: its loss grew huge, then NaN, "not a number"). What they
# show, and the cell checks:
#
# - **Without residual connections** training barely starts: six blocks in a row, each
#   fed only the previous one's output, make the gradient reaching the early layers weak
#   and noisy. Its loss stays well above the full block's (by more than 0.3).
# - **Without the feed-forward network** the model learns, but ends clearly worse than
#   the full block (by more than 0.2): attention alone can only average token vectors,
#   with little to transform them.
# - **Without layer norms** nothing keeps the scale of the vectors in check. At this
#   learning rate the full run blows up partway (the loss becomes NaN); the short fast run
#   stops before that and simply ends behind the full block (by more than 0.2).
#
# The full block reaches a validation loss below 2.4 (3.0 in fast mode).

# %%
fig, ax = plt.subplots(figsize=(8, 4.5))
for name, curve in curves.items():
    steps, losses = zip(*curve, strict=True)
    ax.plot(steps, losses, marker="o", markersize=3, label=name)
ax.set_ylim(1.5, 4.5)
ax.set_xlabel("training step")
ax.set_ylabel("validation loss (nats per character)")
ax.set_title("what each part of the block is for")
ax.grid(alpha=0.3)
ax.legend()
plt.show()

final = {name: curve[-1][1] for name, curve in curves.items()}
assert final["full block"] < (3.0 if FAST else 2.4)
assert final["full block"] < final["no residual"] - 0.3
assert final["full block"] < final["no feed-forward"] - 0.2
no_norm = final["no layer norm"]
assert not np.isfinite(no_norm) or no_norm > final["full block"] + 0.2

# %% [markdown]
# **What to remember.** A block = attention (mixing across positions) + feed-forward
# network (computing on each position), each wrapped as `x + sublayer(norm(x))`. The
# residual path is what lets blocks stack deep; the norm keeps the scale in check; the FFN
# does much of the work on each token. Next: the three families built from these blocks.
