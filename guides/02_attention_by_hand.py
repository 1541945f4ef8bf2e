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
# # 2. Attention by hand
#
# Self-attention lets every token build its new vector from the vectors of the other
# tokens, weighting each by how relevant it is. This guide computes it step by step, with
# plain tensor operations, on a real sentence and real trained weights: the first layer of
# MiniLM, the bundled BERT-style encoder. Then it checks the hand-made numbers against
# attnlab's `MultiHeadAttention` and PyTorch's `torch.nn.MultiheadAttention`, and ends with
# the two masks: causal and padding.

# %%
import math

import matplotlib.pyplot as plt
import torch

import attnlab
from attnlab.inspect import display_token

torch.manual_seed(0)
minilm = attnlab.from_pretrained("minilm")
model, tokenizer = minilm.model, minilm.tokenizer
sentence = "The cat sat on the mat because it was tired."
ids = torch.tensor([tokenizer.encode(sentence, add_special_tokens=True)])  # (1, T)
tokens = [display_token(tokenizer.id_to_token(i), i) for i in ids[0].tolist()]
print(tokens)

# %% [markdown]
# ## The input: one vector per token
#
# The model's embedding layer (token + position + segment embeddings, then a layer norm)
# turns the 13 tokens into 13 vectors of width 384. That matrix, `x`, is what the first
# attention layer reads.

# %%
with torch.no_grad():
    out = model(ids, output_hidden_states=True, output_attentions=True)
x = out.hidden_states[0][0]  # (T, D): the embeddings' output, before block 0
T, D = x.shape
print("x:", tuple(x.shape))
assert (T, D) == (13, 384)

# %% [markdown]
# ## Queries, keys and values
#
# Each token plays three roles, each a linear map of its vector:
#
# - its **query** `q` says what it is looking for,
# - its **key** `k` says what it offers to be found by,
# - its **value** `v` is what it hands over when found.
#
# MiniLM's attention keeps the three weight matrices stacked in one `in_proj` (the layout
# PyTorch uses too). The layer has 12 heads; each gets its own 32-wide slice of `q`, `k`
# and `v`. We start with one head, head 2.

# %%
attention = model.stack.blocks[0].self_attn
W, b = attention.in_proj.weight.detach(), attention.in_proj.bias.detach()  # (3D, D), (3D,)
Wq, Wk, Wv = W.split(D)  # three (D, D) matrices
bq, bk, bv = b.split(D)
H = attention.n_heads
Dh = D // H
q = x @ Wq.T + bq  # (T, D)
k = x @ Wk.T + bk  # (T, D)
v = x @ Wv.T + bv  # (T, D)
head = 2
cols = slice(head * Dh, (head + 1) * Dh)
q3, k3, v3 = q[:, cols], k[:, cols], v[:, cols]  # (T, Dh) each
print(f"{H} heads of width {Dh}; head {head}: q {tuple(q3.shape)}")
assert (H, Dh) == (12, 32)

# %% [markdown]
# ## Scores, scaling, softmax, weighted sum
#
# The score of query `i` for key `j` is their dot product: large when they point the same
# way. Before the softmax the scores are divided by `sqrt(Dh)`. Why: for vectors of random
# entries with variance 1, a dot product of `Dh` terms has standard deviation `sqrt(Dh)`,
# and a softmax over such large numbers puts nearly all weight on one key (and passes
# almost no gradient back). Dividing brings the spread back to about 1, as the cell shows
# on random vectors (ratio within 5% of 1).

# %%
g = torch.Generator().manual_seed(0)
a, c = torch.randn(20000, Dh, generator=g), torch.randn(20000, Dh, generator=g)
spread = (a * c).sum(-1).std().item()
print(f"std of a random {Dh}-dimensional dot product: {spread:.2f} (sqrt(Dh) = {Dh**0.5:.2f})")
assert abs(spread / math.sqrt(Dh) - 1) < 0.05

# %% [markdown]
# The softmax turns each row of scores into weights that are positive and sum to 1, and
# the output of each token is the weighted sum of the value vectors. Below you will see
# head 2's weights: row `i` is where token `i` looks. This head looks at the previous
# token and almost nowhere else (on average more than 0.9 of each row sits just below the
# diagonal): a "previous token" head, a pattern many first layers learn.

# %%
scores = q3 @ k3.T / math.sqrt(Dh)  # (T, T): query i, key j
weights = scores.softmax(dim=-1)  # (T, T): each row sums to 1
head_out = weights @ v3  # (T, Dh)
assert torch.allclose(weights.sum(-1), torch.ones(T), atol=1e-6)

fig, ax = plt.subplots(figsize=(5.5, 5))
ax.imshow(weights, cmap="viridis")
ax.set_xticks(range(T), tokens, rotation=90)
ax.set_yticks(range(T), tokens)
ax.set_xlabel("key (looked at)")
ax.set_ylabel("query (looking)")
ax.set_title(f"layer 0, head {head}: attention weights")
plt.show()
previous = weights.diagonal(-1).mean().item()
print(f"mean weight on the previous token: {previous:.2f}")
assert previous > 0.9

# %% [markdown]
# ## All heads at once
#
# Every head does the same with its own slice; the heads' outputs are laid side by side
# (back to width 384) and mixed by one more linear map, `out_proj`. With a batch dimension
# this is one reshape: `(T, D) -> (T, H, Dh) -> (H, T, Dh)`. Below you will see four of the
# twelve heads: each has its own pattern, which is the point of having several.


# %%
def split_heads(t: torch.Tensor) -> torch.Tensor:
    return t.view(T, H, Dh).transpose(0, 1)  # (T, D) -> (T, H, Dh) -> (H, T, Dh)


all_weights = (split_heads(q) @ split_heads(k).transpose(1, 2) / math.sqrt(Dh)).softmax(-1)
merged = (all_weights @ split_heads(v)).transpose(0, 1).reshape(T, D)  # (H,T,Dh) -> (T, D)
by_hand = merged @ attention.out_proj.weight.detach().T + attention.out_proj.bias.detach()
assert torch.allclose(all_weights[head], weights, atol=1e-6)

fig, axes = plt.subplots(1, 4, figsize=(14, 3.8))
for ax, h in zip(axes, (0, 2, 5, 8), strict=True):
    ax.imshow(all_weights[h], cmap="viridis")
    ax.set_xticks(range(T), tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(T), tokens, fontsize=7)
    ax.set_title(f"head {h}")
plt.show()

# %% [markdown]
# ## The same numbers from attnlab and from PyTorch
#
# attnlab's `MultiHeadAttention` (the module inside MiniLM) and PyTorch's
# `torch.nn.MultiheadAttention`, given the same weights, must give the hand-made output
# and weights. The cell asserts both agree within 1e-5 (float32 rounding; the fused kernel
# adds in a different order).

# %%
with torch.no_grad():
    ours = attention(x[None], need_weights=True)
    torch_mha = torch.nn.MultiheadAttention(D, H, batch_first=True)
    torch_mha.in_proj_weight.copy_(W)
    torch_mha.in_proj_bias.copy_(b)
    torch_mha.out_proj.weight.copy_(attention.out_proj.weight)
    torch_mha.out_proj.bias.copy_(attention.out_proj.bias)
    theirs, theirs_weights = torch_mha(x[None], x[None], x[None], average_attn_weights=False)
    fused = attention(x[None]).output  # attnlab's default backend: PyTorch's fused kernel
assert torch.allclose(ours.output[0], by_hand, atol=1e-5)
assert torch.allclose(ours.weights[0], all_weights, atol=1e-5)
assert torch.allclose(theirs[0], by_hand, atol=1e-5)
assert torch.allclose(theirs_weights[0], all_weights, atol=1e-5)
assert torch.allclose(fused[0], by_hand, atol=1e-5)
# and the model's own run saw the same weights in layer 0
assert torch.allclose(out.attentions[0][0], all_weights, atol=1e-5)
print("hand-made = attnlab = torch.nn.MultiheadAttention (within 1e-5)")

# %% [markdown]
# ## Masks
#
# Two masks decide which keys a query may see at all: a masked score is set to a huge
# negative number before the softmax, so its weight becomes exactly 0.
#
# - The **causal** mask lets token `i` see only tokens `0..i`. A language model predicts
#   each next token from the ones before it, so it must not peek ahead; with the mask, all
#   positions of a sequence can be trained in parallel.
# - The **padding** mask hides the filler tokens that make sentences of different lengths
#   fit in one rectangular batch.
#
# attnlab's masks are boolean with True meaning "may attend" (`attnlab.nn.masks`).
# PyTorch's `MultiheadAttention` uses the opposite: True means "blocked". Below you will
# see, for a batch of two sentences (the second padded with `[PAD]` to the first one's
# length), the causal mask, and head 0's weights (a head that spreads its attention) with
# causal and padding masks together: nothing above the diagonal, nothing on `[PAD]` keys.

# %%
from attnlab.data import pad_sequences  # noqa: E402
from attnlab.nn import causal_mask, combine_masks, padding_mask  # noqa: E402

short = "A dog ran."
batch, attention_mask = pad_sequences(
    [ids[0].tolist(), tokenizer.encode(short, add_special_tokens=True)], tokenizer.pad_id
)  # (2, T) ids, (2, T) 1 at real tokens, 0 at padding
n_real = int(attention_mask[1].sum())
with torch.no_grad():
    xb = model(batch, attention_mask=attention_mask, output_hidden_states=True).hidden_states[0]
    mask = combine_masks(causal_mask(T), padding_mask(attention_mask))  # (2, 1, T, T)
    masked = attention(xb, mask=mask, need_weights=True)
    alone = attention(xb[1:, :n_real], causal=True)  # the short sentence without padding
    blocked = ~mask[:, 0].repeat_interleave(H, dim=0)  # (2*H, T, T): PyTorch's convention
    theirs_masked, _ = torch_mha(xb, xb, xb, attn_mask=blocked)

short_tokens = [display_token(tokenizer.id_to_token(i), i) for i in batch[1].tolist()]
fig, axes = plt.subplots(1, 3, figsize=(14, 4.2))
axes[0].imshow(causal_mask(T), cmap="gray")
axes[0].set_title("causal mask (white: may attend)")
for ax, row, labels in ((axes[1], 0, tokens), (axes[2], 1, short_tokens)):
    ax.imshow(masked.weights[row, 0], cmap="viridis")
    ax.set_xticks(range(T), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(T), labels, fontsize=7)
    ax.set_title(f"sentence {row + 1}, head 0: causal + padding")
plt.show()

w = masked.weights  # (2, H, T, T)
assert (w[~mask.expand_as(w)] == 0).all()  # masked keys get exactly zero weight
assert torch.allclose(w[1, :, :n_real].sum(-1), torch.ones(H, n_real), atol=1e-6)
# the short sentence's real tokens get the same output padded or alone
assert torch.allclose(masked.output[1, :n_real], alone.output[0], atol=1e-5)
assert torch.allclose(theirs_masked, masked.output, atol=1e-5)
print(f"padding changed nothing for the {n_real} real tokens of {short!r}")

# %% [markdown]
# Note the padding rows of sentence 2 (its last queries): they still produce *some*
# output, which the model simply never uses; only the columns matter for the real tokens.
#
# **What to remember.** Attention is three linear maps, one matrix product for the scores,
# a scaling by `sqrt(Dh)`, a softmax per row and a second matrix product with the values;
# heads do this in parallel on slices and a last linear map mixes them. Masks remove keys
# by sending their scores to minus infinity. Next: the rest of a Transformer block.
