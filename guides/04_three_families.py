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
# # 4. The three families
#
# The same blocks make three kinds of model, which differ in what attention may see and in
# what sits on top of the stack:
#
# - **decoder-only** (GPT, Llama, SmolLM2): causal attention, each token sees only the
#   past; on top, next-token probabilities;
# - **encoder-only** (BERT, MiniLM): bidirectional attention, every token sees the whole
#   text; on top, nothing (a vector per token), a classifier, or masked-token prediction;
# - **encoder-decoder** (the original Transformer, T5): a bidirectional encoder reads the
#   source, a causal decoder writes the target and, through cross-attention, reads the
#   encoder's output; on top, next-target-token probabilities.
#
# This guide trains a tiny character-level GPT and samples from it, uses MiniLM for
# sentence similarity and sentiment, and trains a small German-to-English translator and
# draws its cross-attention. `ATTNLAB_FAST=1` (the test suite) runs each on a fraction of
# the budget; the assertions keep their meaning with looser bounds.

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

import attnlab
from attnlab import ModelConfig, build_model
from attnlab.config.fast import fast_mode
from attnlab.data import random_windows, read_text, split_tokens
from attnlab.generation import GenerationConfig, generate

FAST = fast_mode()
BATCH = 32 if FAST else 64  # sequences per training step
torch.manual_seed(0)
torch.set_num_threads(min(2, torch.get_num_threads()))


def train_steps(model, batches, steps, lr):
    """Plain training: AdamW, a short warm-up, the loss of each batch."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: min(1.0, (s + 1) / 20))
    model.train()
    for _ in range(steps):
        loss = model(**next(batches)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
    model.eval()


# %% [markdown]
# ## Decoder-only: a character GPT
#
# A 3-layer model of width 64 with rotary positions (the shape of attnlab's
# `shakespeare-cpu` preset) learns to predict the next character of Tiny Shakespeare. The
# training target is the input shifted by one: at every position the model is asked for
# the character that follows, and the causal mask keeps it from looking. Before training
# the validation loss is about `ln(vocabulary size)`, 4.2 nats (a uniform guess); after 400
# steps (30 in fast mode) you will see it below 2.3 (3.0 in fast mode).

# %%
from attnlab.tokenizers import train_char_tokenizer  # noqa: E402

text = read_text("shakespeare")
chars = train_char_tokenizer(text)
splits = split_tokens(np.array(chars.encode(text), dtype=np.int32))
gpt = build_model(
    ModelConfig(
        family="decoder",
        vocab_size=chars.vocab_size,
        d_model=64,
        n_heads=4,
        n_layers=3,
        max_seq_len=64,
        positional="rope",
        activation="relu",
        bias=False,
    )
)
gen = torch.Generator().manual_seed(0)
val = [random_windows(splits.val, 64, 64, gen) for _ in range(4)]


def lm_batches():
    while True:
        x, y = random_windows(splits.train, BATCH, 64, gen)  # (B, T) inputs, next characters
        yield {"input_ids": x, "targets": y}


@torch.no_grad()
def lm_val_loss() -> float:
    return float(np.mean([gpt(x, targets=y).loss.item() for x, y in val]))


before = lm_val_loss()
start = time.perf_counter()
train_steps(gpt, lm_batches(), 30 if FAST else 400, lr=1e-2)
after = lm_val_loss()
print(f"val loss {before:.2f} -> {after:.2f} in {time.perf_counter() - start:.0f} s")
assert abs(before - np.log(chars.vocab_size)) < 0.2
assert after < (3.0 if FAST else 2.3)

# %% [markdown]
# Generation runs the model again and again: predict a distribution over the next
# character, draw one (here from the 40 most likely, with temperature 0.8 to sharpen the
# distribution), append it, repeat. `attnlab.generation.generate` does this with a KV
# cache (guide 5). Below you will see 300 characters after the prompt "ROMEO:": not
# Shakespeare, but after these few hundred steps on a CPU it has learned words, line breaks
# and the `NAME:` layout of the play.

# %%
prompt = torch.tensor([chars.encode("ROMEO:")])
config = GenerationConfig(max_new_tokens=300, do_sample=True, temperature=0.8, top_k=40, seed=0)
sample = generate(gpt, prompt, config)
print(chars.decode(sample[0].tolist()))
assert sample.shape == (1, prompt.shape[1] + 300)
assert torch.equal(sample, generate(gpt, prompt, config))  # a seed makes sampling repeatable

# %% [markdown]
# ## Encoder-only: MiniLM for similarity and sentiment
#
# An encoder reads the whole text at once and gives one vector per token. MiniLM
# (all-MiniLM-L6-v2, bundled) was trained so that the *mean* of those vectors, scaled to
# length 1, places sentences of similar meaning close together. The cosine of two such
# vectors is their similarity. Below you will see that the two sentences about eating are
# far more similar to each other (by more than 0.3) than to the one about the sky, though
# they share few words beyond "A man is eating".

# %%
from attnlab.interop.sentences import cosine_matrix, embed_sentences  # noqa: E402

minilm = attnlab.from_pretrained("minilm")
sentences = ["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue."]
similarity = cosine_matrix(embed_sentences(minilm.model, minilm.tokenizer, sentences))
for i, j in ((0, 1), (0, 2), (1, 2)):
    print(f"{similarity[i, j]:.2f}  {sentences[i]!r} ~ {sentences[j]!r}")
assert similarity[0, 1] > similarity[0, 2] + 0.3
assert similarity[0, 1] > similarity[1, 2] + 0.3

# %% [markdown]
# The same vectors make a sentiment classifier with almost no training: freeze MiniLM,
# embed labelled movie-review sentences from SST-2 (bundled), and fit one linear layer (a
# logistic regression) on top. This is the encoder family's usual use: the pretrained
# stack reads, a small head decides. Trained on 2,000 sentences (150 in fast mode), it
# labels the held-out dev sentences with more than 70% accuracy (60% in fast mode; a coin
# flip gets 50%). Fine-tuning the whole encoder does better (`attnlab train sst2-minilm`;
# measured results in `bench/RESULTS.md`).

# %%
from attnlab.data import load_classification  # noqa: E402

n_train, n_dev = (150, 100) if FAST else (2000, 872)
train_set, dev_set = load_classification("sst2", "train"), load_classification("sst2", "dev")
start = time.perf_counter()
train_x = embed_sentences(minilm.model, minilm.tokenizer, train_set.texts[:n_train])  # (N, 384)
dev_x = embed_sentences(minilm.model, minilm.tokenizer, dev_set.texts[:n_dev])
train_y, dev_y = torch.tensor(train_set.labels[:n_train]), torch.tensor(dev_set.labels[:n_dev])
head = torch.nn.Linear(384, 2)
optimizer = torch.optim.AdamW(head.parameters(), lr=1e-2, weight_decay=1e-3)
for _ in range(300):  # the embeddings have length 1: x10 gives the head larger inputs
    loss = torch.nn.functional.cross_entropy(head(train_x * 10), train_y)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
with torch.no_grad():
    accuracy = (head(dev_x * 10).argmax(-1) == dev_y).float().mean().item()
print(f"dev accuracy {accuracy:.1%} on {n_dev} sentences ({time.perf_counter() - start:.0f} s)")
assert accuracy > (0.60 if FAST else 0.70)

# %% [markdown]
# ## Encoder-decoder: translation
#
# The encoder reads the German sentence; the decoder writes English one token at a time,
# causally, and in every block a **cross-attention** layer lets each target position
# look at the encoder's output (queries from the decoder, keys and values from the
# encoder). We train a small model (2 + 2 layers, width 128, one byte-level BPE vocabulary
# shared by both languages) on Multi30k, short image captions. In the time of a guide it
# learns only a rough translation (attnlab's `multi30k-de-en` preset trains for most of
# an hour; its BLEU is in `bench/RESULTS.md`). The loss on 64 held-out sentence pairs
# falls by more than 2 nats from its start (0.5 in fast mode).

# %%
from attnlab.data import collate_translation, load_parallel  # noqa: E402
from attnlab.tokenizers import train_bpe_tokenizer  # noqa: E402

pairs = load_parallel("multi30k", "train")
bpe = train_bpe_tokenizer(pairs.source[:10000] + pairs.target[:10000], 320 if FAST else 2000)
source_ids = [bpe.encode(s)[:40] + [bpe.eos_id] for s in pairs.source]
target_ids = [bpe.encode(t)[:40] for t in pairs.target]
n_val = 64
translator = build_model(
    ModelConfig(
        family="encoder_decoder",
        vocab_size=bpe.vocab_size,
        d_model=128,
        n_heads=4,
        n_layers=2,
        d_ff=512,
        max_seq_len=64,
        positional="sinusoidal",
    )
)


def pair_batch(rows):
    return collate_translation(
        [source_ids[i] for i in rows],
        [target_ids[i] for i in rows],
        pad_id=bpe.pad_id,
        bos_id=bpe.bos_id,
        eos_id=bpe.eos_id,
    )


def translation_batches():
    while True:
        rows = torch.randint(n_val, len(source_ids), (BATCH * 3 // 4,), generator=gen)
        yield pair_batch(rows.tolist())


@torch.no_grad()
def translation_val_loss() -> float:
    return translator(**pair_batch(range(n_val))).loss.item()


before = translation_val_loss()
start = time.perf_counter()
train_steps(translator, translation_batches(), 20 if FAST else 300, lr=2e-3)
after = translation_val_loss()
print(f"val loss {before:.2f} -> {after:.2f} in {time.perf_counter() - start:.0f} s")
assert after < before - (0.5 if FAST else 2.0)

# %% [markdown]
# Below you will see the model's greedy translation of a sentence held out of training,
# next to the reference, and then its cross-attention: for every English token it wrote
# (rows), how much each head of the last decoder layer looked at each German token
# (columns); each row sums to 1 over the source. In a well-trained translator many rows
# peak on the German word being translated; look for how far this short training
# got (in fast mode, 20 steps, the "translation" is still noise).

# %%
from attnlab.generation import generate_seq2seq  # noqa: E402
from attnlab.inspect import attention_maps  # noqa: E402

i = 3
source = torch.tensor([source_ids[i]])
greedy = GenerationConfig(max_new_tokens=30, eos_token_ids=[bpe.eos_id])
english = bpe.decode(
    generate_seq2seq(translator, source, greedy, bos_token_id=bpe.bos_id)[0].tolist()
)
print("German:     ", pairs.source[i])
print("reference:  ", pairs.target[i])
print("translation:", english)

maps = attention_maps(translator, bpe, source=pairs.source[i], target=english)
cross = maps["cross"]  # weights (layers, heads, target tokens, source tokens)
last = cross.weights[-1]
fig, axes = plt.subplots(1, last.shape[0], figsize=(4 * last.shape[0], 4.5))
for h, ax in enumerate(axes):
    ax.imshow(last[h], cmap="viridis")
    ax.set_xticks(range(len(cross.key_tokens)), cross.key_tokens, rotation=90, fontsize=7)
    ax.set_yticks(range(len(cross.query_tokens)), cross.query_tokens, fontsize=7)
    ax.set_title(f"cross-attention, last layer, head {h}")
plt.show()
assert torch.allclose(last.sum(-1), torch.ones(last.shape[:2]), atol=1e-5)
assert len(english) > 0

# %% [markdown]
# **What to remember.** One kind of block, three arrangements: a causal stack that
# predicts the next token (generation), a bidirectional stack whose vectors describe the
# text (similarity, classification), and both joined by cross-attention (translation).
# Next: the same parts inside real pretrained models.
