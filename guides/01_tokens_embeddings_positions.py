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
# # 1. Tokens, embeddings and positions
#
# A Transformer never sees text. It sees a sequence of integers (token ids), turns each id
# into a vector by looking it up in a table (the embedding), and, because attention by
# itself ignores order, adds or injects information about *where* each token sits. This
# guide runs those three steps on a line of Tiny Shakespeare (bundled with attnlab) and
# draws the four kinds of positional information attnlab implements.
#
# Every number the text states is checked by an `assert` in the cell that computes it.
# `ATTNLAB_FAST=1` (what the test suite sets) shrinks the corpus; nothing else changes.

# %%
import matplotlib.pyplot as plt
import torch

from attnlab.config.fast import fast_mode
from attnlab.data import read_text
from attnlab.tokenizers import train_bpe_tokenizer, train_char_tokenizer

FAST = fast_mode()
torch.manual_seed(0)
corpus = read_text("shakespeare")  # the bundled corpus (its first 30,000 characters in fast mode)
sentence = "Before we proceed any further, hear me speak."
assert sentence in corpus
print(f"{len(corpus):,} characters of Shakespeare")

# %% [markdown]
# ## Tokens
#
# The simplest vocabulary has one token per character. attnlab's character tokenizer
# learns the set of characters in a text; four special tokens (padding, beginning and end
# of sequence, unknown) take ids 0 to 3. Below you will see the sentence's first ids:
# exactly one id per character, and decoding gives the sentence back.

# %%
chars = train_char_tokenizer(corpus)
char_ids = chars.encode(sentence)
print("vocabulary:", chars.vocab_size, "ids")
print("first ten ids:", char_ids[:10], "->", [chars.id_to_token(i) for i in char_ids[:10]])
assert len(char_ids) == len(sentence)
assert chars.decode(char_ids) == sentence

# %% [markdown]
# Characters make long sequences, and attention's cost grows with the square of the length.
# Byte-pair encoding (BPE) starts from the 256 byte values and repeatedly merges the most
# frequent adjacent pair into a new token, so common words and word pieces become single
# tokens. Trained on the same text with 1,000 ids, it cuts the sentence to fewer than half
# as many tokens (the `Ġ` that GPT-2-style BPE writes for a leading space is shown as a
# space here). The round trip is still exact.

# %%
bpe = train_bpe_tokenizer(corpus, vocab_size=1000)
bpe_ids = bpe.encode(sentence)
print(len(bpe_ids), "BPE tokens:", [bpe.decode([i]) for i in bpe_ids])
assert bpe.decode(bpe_ids) == sentence
assert bpe.vocab_size == 1000
assert len(bpe_ids) < len(char_ids) / 2

# %% [markdown]
# ## Embeddings
#
# An embedding table is a matrix with one row per token id (here 1,000 rows of width 64).
# "Embedding" a token is reading its row: no arithmetic at all, which is why it is also the
# same as multiplying a one-hot vector by the table. The table starts random and is
# trained with the rest of the model; tokens used in similar contexts end up with similar
# rows.

# %%
table = torch.nn.Embedding(bpe.vocab_size, 64)
ids = torch.tensor(bpe_ids)
vectors = table(ids)  # (tokens, 64)
one_hot = torch.nn.functional.one_hot(ids, bpe.vocab_size).float()  # (tokens, vocab)
print("embedded sentence:", tuple(vectors.shape))
assert torch.equal(vectors, table.weight[ids])
assert torch.allclose(one_hot @ table.weight, vectors, atol=1e-6)

# %% [markdown]
# ## Why positions are needed
#
# Self-attention compares every token with every other one and sums the results. A sum
# does not care about order: shuffle the input tokens and the outputs come out shuffled
# the same way, with the very same values. Below, an attention layer without positional
# information gives exactly permuted outputs for a permuted sentence. "dog bites man" and
# "man bites dog" would look alike to it.

# %%
from attnlab.nn import MultiHeadAttention  # noqa: E402

attention = MultiHeadAttention(64, n_heads=4).eval()
perm = torch.randperm(len(bpe_ids))
with torch.no_grad():
    out = attention(vectors[None]).output[0]  # (tokens, 64)
    out_shuffled = attention(vectors[perm][None]).output[0]
assert torch.allclose(out[perm], out_shuffled, atol=1e-5)
print("attention without positions is blind to order: outputs are merely permuted")

# %% [markdown]
# attnlab has four ways to give the model positions (`ModelConfig(positional=...)`):
#
# - **sinusoidal** (the original Transformer): a fixed vector per position, added to the
#   token's embedding;
# - **learned** (GPT-2, BERT): a trained vector per position, added the same way;
# - **RoPE** (Llama, SmolLM2): queries and keys are rotated by an angle proportional to
#   their position, inside attention;
# - **ALiBi**: a penalty proportional to the distance is added to each attention score.
#
# ### Sinusoidal
#
# Dimension pair `2i, 2i+1` holds `sin` and `cos` of `position / 10000^(2i/d)`: fast
# waves in the first dimensions, slow ones in the last. Below you will see the table as a
# picture, position on the vertical axis. Because `sin` and `cos` of a sum of angles are
# linear in `sin` and `cos` of each angle, the dot product of two position vectors depends
# only on their distance; the cell checks that it is the same from positions 0 and 50.

# %%
from attnlab.inspect import sinusoidal_encoding  # noqa: E402

pe = sinusoidal_encoding(128, 64)  # (positions, dim)
fig, ax = plt.subplots(figsize=(8, 4))
image = ax.imshow(pe.T, cmap="RdBu_r", aspect="auto", origin="lower")
ax.set_xlabel("position")
ax.set_ylabel("dimension")
ax.set_title("sinusoidal positional encoding (128 positions x 64 dimensions)")
fig.colorbar(image, ax=ax)
plt.show()


def sinusoid_score(start: int, n: int = 40) -> torch.Tensor:
    """PE[start] . PE[start + k] for k = 0 .. n-1."""
    return pe[start : start + n] @ pe[start]


assert torch.allclose(sinusoid_score(0), sinusoid_score(50), atol=1e-3)

# %% [markdown]
# ### Learned
#
# A learned table is just another embedding table, indexed by position. A fresh one is
# noise; what it learns shows in a trained model. MiniLM (a bundled BERT-style encoder)
# has 512 learned positions. Below: the cosine similarity between its first 64 position
# vectors. Neighbours came out similar (the bright band along the diagonal) without anyone
# asking for it: on average a position is much closer to the next one than to the one 30
# places away.

# %%
import attnlab  # noqa: E402
from attnlab.inspect import learned_similarity  # noqa: E402

minilm = attnlab.from_pretrained("minilm")
assert minilm.model.config.max_seq_len == 512
similarity = learned_similarity(minilm.model, 64)  # (64, 64)
fig, ax = plt.subplots(figsize=(5, 4))
image = ax.imshow(similarity, cmap="RdBu_r", vmin=-1, vmax=1, origin="lower")
ax.set_xlabel("position")
ax.set_ylabel("position")
ax.set_title("MiniLM's learned positions: cosine similarity")
fig.colorbar(image, ax=ax)
plt.show()
next_one = similarity.diagonal(1).mean().item()
far_one = similarity.diagonal(30).mean().item()
print(f"mean similarity to the next position {next_one:.2f}, to the one 30 away {far_one:.2f}")
assert next_one > far_one + 0.2

# %% [markdown]
# ### RoPE
#
# RoPE splits each query and key into pairs of numbers and rotates each pair by
# `position x frequency`. The score `q . k` then depends on the *difference* of the two
# angles, that is on the distance between the tokens, not on where they sit. Below you
# will see the score of an all-ones query and key against their distance: 1 at distance 0,
# then falling and oscillating. The cell checks that the curve is the same whether the key
# sits at position 0 or position 100.

# %%
from attnlab.inspect import rope_score_curve  # noqa: E402

rope = rope_score_curve(head_dim=64, max_offset=128)
rope_later = rope_score_curve(head_dim=64, max_offset=128, start=100)
fig, ax = plt.subplots(figsize=(8, 3))
ax.plot(rope.offsets, rope.score)
ax.set_xlabel("distance between query and key")
ax.set_ylabel("score / head_dim")
ax.set_title("RoPE: the score of identical query and key vectors, by distance")
ax.grid(alpha=0.3)
plt.show()
assert abs(rope.score[0].item() - 1.0) < 1e-5
assert torch.allclose(rope.score, rope_later.score, atol=1e-4)
assert (rope.score[1:] < rope.score[0]).all()  # no distance scores as high as distance 0

# %% [markdown]
# ### ALiBi
#
# ALiBi adds nothing to the embeddings. It subtracts `slope x distance` from every score,
# with one slope per head (a geometric sequence: 1/2, 1/4, ... for 8 heads), so some heads
# look far and others only nearby. Below: the bias of 4 of 8 heads over 16 positions,
# causal (the future is masked, drawn blank).

# %%
from attnlab.inspect import alibi_bias  # noqa: E402
from attnlab.nn import alibi_slopes  # noqa: E402

slopes = alibi_slopes(8)
bias = alibi_bias(8, 16, causal=True)  # (heads, queries, keys)
fig, axes = plt.subplots(1, 4, figsize=(12, 3))
for ax, head in zip(axes, (0, 1, 3, 7), strict=True):
    ax.imshow(torch.where(bias[head].isinf(), float("nan"), bias[head]), cmap="magma")
    ax.set_title(f"head {head}: slope {slopes[head]:.3g}")
    ax.set_xlabel("key")
axes[0].set_ylabel("query")
plt.show()
assert torch.allclose(slopes, torch.tensor([2.0 ** -(h + 1) for h in range(8)]))
assert bias[0, 10, 4].item() == -slopes[0].item() * 6

# %% [markdown]
# ## What each does to attention scores, by distance
#
# The four pictures side by side, as one question: how does the score between a query and
# a key change with the distance between them, when the tokens themselves are the same?
# Sinusoidal and learned positions shape it indirectly (the dot products of the position
# vectors, which the model's projections may use or ignore); RoPE builds the distance into
# every query-key product; ALiBi imposes a straight line per head. Two of the curves
# coincide, and not by chance: with identical query and key, RoPE's score is the average
# of `cos(k x frequency)` over its frequencies, and so is the dot product of two
# sinusoidal vectors `k` apart. RoPE rotates by the very angles of the paper's waves.

# %%
from attnlab.inspect import learned_table  # noqa: E402

distance = torch.arange(40)
learned = torch.nn.functional.normalize(learned_table(minilm.model)[:100], dim=-1)
learned_by_distance = torch.stack(
    [(learned[: 100 - k] * learned[k:]).sum(-1).mean() for k in distance.tolist()]
)
fig, axes = plt.subplots(1, 4, figsize=(14, 3))
axes[0].plot(distance, sinusoid_score(0) / 32)
axes[0].set_title("sinusoidal: PE(m).PE(m+k) / (d/2)")
axes[1].plot(distance, learned_by_distance)
axes[1].set_title("learned (MiniLM): mean cosine")
axes[2].plot(distance, rope.score[:40])
axes[2].set_title("RoPE: q.k / head_dim")
for head in (0, 3, 7):
    axes[3].plot(distance, -slopes[head] * distance, label=f"head {head}")
axes[3].legend()
axes[3].set_title("ALiBi: bias")
for ax in axes:
    ax.set_xlabel("distance k")
    ax.grid(alpha=0.3)
plt.show()
assert torch.allclose(sinusoid_score(0) / 32, rope.score[:40], atol=1e-4)  # the same curve
# all four favour nearby tokens: each curve is higher at distance 1 than at distance 30
assert sinusoid_score(0)[1] > sinusoid_score(0)[30]
assert learned_by_distance[1] > learned_by_distance[30]
assert rope.score[1] > rope.score[30]
assert (-slopes * 1 > -slopes * 30).all()

# %% [markdown]
# **What to remember.** Text becomes ids (characters, or BPE pieces that make sequences
# shorter); ids become vectors by a table lookup; and attention, blind to order on its own,
# learns position from added vectors (sinusoidal, learned) or from the scores themselves
# (RoPE, ALiBi). Next: what attention does with those vectors.
