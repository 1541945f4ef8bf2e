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
# # 5. Inside real models
#
# The parts of guides 1 to 4 are exactly what published models are made of. attnlab loads
# two of them, bundled as Python packages, into its own model classes (only the weights
# are mapped; there is no second implementation):
#
# - **SmolLM2-135M-Instruct**: a decoder-only Llama-style model, 30 layers, 9 query heads
#   sharing 3 key/value heads, RoPE, RMSNorm, SwiGLU feed-forward;
# - **all-MiniLM-L6-v2**: a BERT-style encoder, 6 layers, 12 heads, learned positions.
#
# This guide looks at their attention, measures what the KV cache saves when generating,
# and compares decoding strategies on one prompt. `ATTNLAB_FAST=1` (the test suite)
# generates fewer tokens; the assertions keep their meaning with looser bounds.

# %%
import time

import matplotlib.pyplot as plt
import torch

import attnlab
from attnlab.config.fast import fast_mode
from attnlab.inspect import attention_maps

FAST = fast_mode()
torch.manual_seed(0)
torch.set_num_threads(min(2, torch.get_num_threads()))
smollm = attnlab.from_pretrained("smollm2")
minilm = attnlab.from_pretrained("minilm")
lm, tokenizer = smollm.model, smollm.tokenizer
print(f"SmolLM2: {lm.num_parameters():,} parameters; MiniLM: {minilm.model.num_parameters():,}")
c = lm.config
assert (c.n_layers, c.n_heads, c.n_kv_heads, c.positional, c.norm) == (30, 9, 3, "rope", "rmsnorm")
assert (minilm.model.config.n_layers, minilm.model.config.n_heads) == (6, 12)


def draw(amap, layers, heads, title):
    """A grid of heatmaps: one row per layer, one column per head."""
    size = (3.2 * len(heads), 3.4 * len(layers))
    fig, axes = plt.subplots(len(layers), len(heads), figsize=size, layout="constrained")
    n = len(amap.key_tokens)
    for row, layer in enumerate(layers):
        for col, head in enumerate(heads):
            ax = axes[row, col]
            ax.imshow(amap.weights[layer, head], cmap="viridis", vmin=0, vmax=1)
            ax.set_title(f"layer {layer}, head {head}", fontsize=9)
            ax.set_xticks(range(n), amap.key_tokens, rotation=90, fontsize=6)
            ax.set_yticks(range(n), amap.query_tokens, fontsize=6)
    fig.suptitle(title)
    plt.show()


# %% [markdown]
# ## SmolLM2's attention
#
# `attention_maps` runs the model once and returns every layer's and head's weights,
# labelled with the tokens. Below you will see three layers (first, middle, last) and
# three heads of each. Everything above the diagonal is zero: the causal mask. In the
# first layer the weights spread over nearby tokens; further up, many heads put most of
# their weight on the very first token. This "attention sink" is a known trait of trained
# decoders: softmax weights must sum to 1, and a head with nothing useful to fetch parks
# its attention on a token that is always there. From layer 15 on, the first token gets
# more than half of all the attention on average.

# %%
text = "The cat sat on the mat because it was tired, so it fell asleep."
smol_map = attention_maps(lm, tokenizer, text)["self"]
w = smol_map.weights  # (layers, heads, queries, keys)
print("weights:", tuple(w.shape), smol_map.query_tokens)
draw(smol_map, layers=(0, 15, 29), heads=(0, 3, 6), title="SmolLM2 self-attention")

assert w.shape[:2] == (30, 9)
assert torch.allclose(w.sum(-1), torch.ones(w.shape[:-1]), atol=1e-4)
assert (w.triu(diagonal=1) == 0).all()  # the causal mask
sink = w[15:, :, 1:, 0].mean().item()  # weight on token 0, queries after it, layers 15-29
print(f"layers 15-29: mean weight on the first token {sink:.2f}")
assert sink > 0.5

# %% [markdown]
# ## MiniLM's attention
#
# An encoder has no causal mask: every token sees the whole sentence, so the maps are
# full squares. The tokenizer wraps the sentence in `[CLS] ... [SEP]`. Below you will see
# the middle layers, where `[CLS]` plays the sink's part: in layers 1 to 4 more than 40%
# of all attention goes to it, while other heads follow the neighbouring words.

# %%
mini_map = attention_maps(
    minilm.model, minilm.tokenizer, "The cat sat on the mat because it was tired."
)["self"]
print(mini_map.query_tokens)
draw(mini_map, layers=(1, 4), heads=(0, 4, 8, 11), title="MiniLM self-attention")
to_cls = mini_map.weights[1:5, :, :, 0].mean().item()
print(f"layers 1-4: mean weight on [CLS] {to_cls:.2f}")
assert mini_map.query_tokens[0] == "[CLS]" and mini_map.query_tokens[-1] == "[SEP]"
assert (mini_map.weights.triu(diagonal=1).sum() > 1).item()  # no causal mask: the future is seen
assert to_cls > 0.4

# %% [markdown]
# ## The KV cache
#
# To generate, a decoder predicts one token, appends it and runs again. Done naively,
# every step recomputes the queries, keys and values of the *whole* sequence so far, though
# only the new token's are new: a past token's key and value never change, because the
# causal mask keeps it from seeing what came later. The KV cache stores each layer's keys
# and values, so each step feeds only the newest token through the model and attends to
# the stored ones.
#
# Below, the same greedy continuation is computed both ways. The cell checks that both
# produce the same tokens and that the cache is at least 2 times faster (1.5 in fast mode,
# which generates only 8 tokens). Without the cache each step costs more as the text grows;
# with it, each step costs about the same.

# %%
from attnlab.generation import GenerationConfig, generate  # noqa: E402

prompt_text = (
    "The Transformer is a neural network architecture that relies on attention. "
    "It was introduced in 2017 for machine translation, and today it is used for"
)
prompt = torch.tensor([tokenizer.encode(prompt_text)])  # (1, P)
n_new = 8 if FAST else 32


@torch.no_grad()
def generate_without_cache(ids: torch.Tensor, steps: int) -> torch.Tensor:
    for _ in range(steps):
        logits = lm(ids).logits  # (1, T, V): the whole sequence, every step
        ids = torch.cat([ids, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return ids


start = time.perf_counter()
naive = generate_without_cache(prompt, n_new)
naive_s = time.perf_counter() - start
start = time.perf_counter()
cached = generate(lm, prompt, GenerationConfig(max_new_tokens=n_new, traced_step=False))
cached_s = time.perf_counter() - start
print(tokenizer.decode(cached[0, prompt.shape[1] :].tolist()))
print(
    f"{prompt.shape[1]} prompt tokens, {n_new} new: without cache {naive_s:.2f} s, "
    f"with cache {cached_s:.2f} s: {naive_s / cached_s:.1f}x faster"
)
assert torch.equal(naive, cached)
assert naive_s / cached_s > (1.5 if FAST else 2.0)

# %% [markdown]
# ## Decoding strategies
#
# At every step the model gives a probability for each of its 49,152 tokens. How to pick
# one is the decoding strategy:
#
# - **greedy**: always the most likely token. Deterministic, and often repetitive;
# - **top-k sampling**: draw from the k most likely tokens only (here 50);
# - **top-p (nucleus) sampling**: draw from the smallest set of most likely tokens whose
#   probabilities add up to p (here 0.9): few candidates when the model is sure, many
#   when it is not;
# - **beam search**: keep the 4 best partial continuations (by total log-probability) at
#   every step, and return the best at the end.
#
# First, what the filters keep of the distribution for the prompt's next token: top-k
# exactly 50 tokens, top-p a set whose probabilities add up to at least 0.9 (and dropping
# its least likely member would fall below 0.9).

# %%
from attnlab.generation import top_k_filter, top_p_filter  # noqa: E402

with torch.no_grad():
    next_logits = lm(prompt).logits[:, -1]  # (1, V)
probs = next_logits.softmax(-1)
assert next_logits.shape[-1] == 49152
kept_k = top_k_filter(next_logits, 50).isfinite()
kept_p = top_p_filter(next_logits, 0.9).isfinite()
mass = probs[kept_p].sum().item()
print(
    f"top-k keeps {int(kept_k.sum())} tokens; top-p keeps {int(kept_p.sum())} "
    f"holding {mass:.2f} of the probability"
)
assert int(kept_k.sum()) == 50
assert mass >= 0.9 and mass - probs[kept_p].min().item() < 0.9

# %% [markdown]
# Below you will see the four continuations of one prompt, each with its average
# log-probability per token under the model. Greedy and beam search pick likely tokens, so
# their scores are high; sampling trades likelihood for variety. Beam search, which looks
# further than one step, finds a continuation at least as likely as greedy's. Sampling
# with a seed repeats exactly.

# %%
story = torch.tensor([tokenizer.encode("Once upon a time, in a small village by the sea,")])
n_story = 8 if FAST else 30
strategies = {
    "greedy": GenerationConfig(max_new_tokens=n_story),
    "top-k 50": GenerationConfig(max_new_tokens=n_story, do_sample=True, top_k=50, seed=1),
    "top-p 0.9": GenerationConfig(max_new_tokens=n_story, do_sample=True, top_p=0.9, seed=1),
    "beam 4": GenerationConfig(max_new_tokens=n_story, num_beams=4),
}


@torch.no_grad()
def mean_logprob(ids: torch.Tensor) -> float:
    """Mean log-probability of the generated tokens under the model (teacher-forced)."""
    logprobs = lm(ids[:, :-1]).logits.log_softmax(-1)  # (1, T-1, V)
    chosen = logprobs.gather(-1, ids[:, 1:, None])[0, :, 0]  # (T-1,)
    return chosen[story.shape[1] - 1 :].mean().item()


scores = {}
for name, config in strategies.items():
    out = generate(lm, story, config)
    scores[name] = mean_logprob(out)
    continuation = tokenizer.decode(out[0, story.shape[1] :].tolist()).replace("\n", " ")
    print(f"{name:10s} {scores[name]:6.2f}  ...{continuation}")
again = generate(lm, story, strategies["top-k 50"])
assert torch.equal(again, generate(lm, story, strategies["top-k 50"]))
assert scores["beam 4"] >= scores["greedy"] - 1e-4
assert scores["greedy"] > max(scores["top-k 50"], scores["top-p 0.9"])

# %% [markdown]
# **What to remember.** Real models are these same blocks at scale; their attention shows
# recognisable habits (previous-token heads, sinks on the first token or `[CLS]`). The KV
# cache turns each generation step from "rerun everything" into "run one token", and the
# decoding strategy, not the model, decides between the most likely text and a varied one.
# The command line does all of this too: `attnlab attention`, `attnlab generate`,
# `attnlab chat`.
