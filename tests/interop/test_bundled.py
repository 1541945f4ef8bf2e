"""The two bundled real models against transformers: MiniLM (BERT, safetensors) and
SmolLM2-135M-Instruct (Llama, GGUF Q4_1 with a Q8_0 embedding). Each model is loaded once
per session (the ``pretrained`` fixture of tests/conftest.py), each reference once here."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from required import missing, module  # noqa: E402

transformers = module("transformers")
module("gguf")

import attnlab  # noqa: E402
from attnlab import cli  # noqa: E402
from attnlab.generation import GenerationConfig, generate  # noqa: E402
from attnlab.interop import resolve_name  # noqa: E402
from attnlab.interop.chat import ChatSession  # noqa: E402
from attnlab.interop.sentences import batch_encode, embed_sentences  # noqa: E402

SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome and everyone should watch it this weekend.",
    "A woman is playing the violin.",
    "Two men pushed carts through the woods.",
    "Hi",
    "The cat sat on the mat while the dog slept by the warm fireplace all afternoon.",
    "Quantum computers use qubits.",
    "Stock markets fell sharply on Monday after the announcement.",
    "Ein Mann isst Brot.",
]

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three primary colors are",
    "Water boils at a temperature of",
]


def _bundled(name: str):  # noqa: ANN202
    try:
        return resolve_name(name)
    except FileNotFoundError as err:
        missing(str(err))


@pytest.fixture(scope="module", autouse=True)
def _one_thread():  # noqa: ANN202
    """These models are small and the test machine is shared: with other jobs on every
    core, each multi-threaded op waits for a descheduled OpenMP thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def minilm(pretrained):  # noqa: ANN001, ANN201
    path = _bundled("minilm")
    ref = transformers.BertModel.from_pretrained(path, add_pooling_layer=False).eval()
    return pretrained("minilm"), ref


@pytest.fixture(scope="module")
def smollm2(pretrained):  # noqa: ANN001, ANN201
    path = _bundled("smollm2")
    ref = transformers.AutoModelForCausalLM.from_pretrained(
        path.parent, gguf_file=path.name, dtype=torch.float32
    ).eval()
    return pretrained("smollm2"), ref


@pytest.fixture(scope="module")
def smollm2_quantized(pretrained):  # noqa: ANN001, ANN201
    _bundled("smollm2")
    return pretrained("smollm2", quantized=True)


@torch.no_grad()
def test_minilm_hidden_states_and_embeddings_match_transformers(minilm) -> None:  # noqa: ANN001
    loaded, ref = minilm
    ids, mask = batch_encode(loaded.tokenizer, SENTENCES, 512)
    assert len(set(mask.sum(1).tolist())) > 5  # really different lengths, really padded
    ours = loaded.model(ids, attention_mask=mask).last_hidden_state
    want = ref(input_ids=ids, attention_mask=mask).last_hidden_state
    real = mask.bool()
    torch.testing.assert_close(ours[real], want[real], atol=1e-4, rtol=0)

    weights = mask[..., None].float()
    want_emb = F.normalize((want * weights).sum(1) / weights.sum(1), dim=-1)
    emb = embed_sentences(loaded.model, loaded.tokenizer, SENTENCES)
    assert torch.allclose(emb.norm(dim=-1), torch.ones(len(SENTENCES)), atol=1e-6)
    assert (F.cosine_similarity(emb, want_emb) >= 0.99999).all()


def test_minilm_tokenizer_does_not_pad_to_128(minilm) -> None:  # noqa: ANN001
    loaded, _ = minilm
    assert loaded.tokenizer.encode("Hi", add_special_tokens=True) == [101, 7632, 102]


def test_bundled_name_as_tokenizer_spec(minilm) -> None:  # noqa: ANN001
    # tokenizer=minilm: a from-scratch model on MiniLM's WordPiece vocabulary
    from attnlab.tokenizers.train import tokenizer_from_spec

    loaded, _ = minilm
    tok = tokenizer_from_spec("minilm", ["unused"], bpe_vocab_size=100)
    assert tok.vocab_size == loaded.tokenizer.vocab_size == 30522
    assert tok.encode("a gripping film") == loaded.tokenizer.encode("a gripping film")
    with pytest.raises(ValueError, match="minilm"):
        tokenizer_from_spec("no-such-model", ["x"], bpe_vocab_size=100)


def test_minilm_meaning(minilm) -> None:  # noqa: ANN001
    loaded, _ = minilm
    a, b, c = embed_sentences(
        loaded.model,
        loaded.tokenizer,
        ["A man is eating food.", "A man is eating a piece of bread.", SENTENCES[8]],
    )
    assert a @ b > a @ c + 0.3


def test_embed_cli_prints_cosines(minilm, monkeypatch, capsys) -> None:  # noqa: ANN001
    loaded, _ = minilm
    monkeypatch.setattr(attnlab, "from_pretrained", lambda name, **options: loaded)
    assert cli.main(["embed", "minilm", *SENTENCES[:3], "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    emb = embed_sentences(loaded.model, loaded.tokenizer, SENTENCES[:3])
    torch.testing.assert_close(torch.tensor(out["cosine"]), emb @ emb.T)
    assert cli.main(["chat", "minilm", "-m", "hi"]) == 1
    assert "not a decoder language model" in capsys.readouterr().err


def _batch(tokenizer, texts: list[str], left: bool) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: ANN001
    encoded = [tokenizer.encode(t) for t in texts]
    width = max(map(len, encoded))
    pads = [[0] * (width - len(e)) for e in encoded]
    ids = [p + e if left else e + p for p, e in zip(pads, encoded, strict=True)]
    mask = [
        [0] * len(p) + [1] * len(e) if left else [1] * len(e) + [0] * len(p)
        for p, e in zip(pads, encoded, strict=True)
    ]
    return torch.tensor(ids), torch.tensor(mask)


@torch.no_grad()
def test_smollm2_logits_match_transformers(smollm2) -> None:  # noqa: ANN001
    loaded, ref = smollm2
    ids, mask = _batch(loaded.tokenizer, PROMPTS, left=False)
    assert len(set(mask.sum(1).tolist())) > 2
    ours = loaded.model(ids, attention_mask=mask).logits
    want = ref(input_ids=ids, attention_mask=mask).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], want[real], atol=1e-3, rtol=0)
    assert (ours[real].argmax(-1) == want[real].argmax(-1)).all()


def test_smollm2_tokenizer_matches_transformers(smollm2) -> None:  # noqa: ANN001
    loaded, _ = smollm2
    path = resolve_name("smollm2")
    ref = transformers.AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    text = "<|im_start|>user\nHow many r's in 'strawberry'? 12345 naïve café 🙂<|im_end|>\n"
    assert loaded.tokenizer.encode(text) == ref.encode(text, add_special_tokens=False)
    assert loaded.tokenizer.decode(loaded.tokenizer.encode(text), skip_special_tokens=False) == text


@torch.no_grad()
def test_smollm2_greedy_same_with_and_without_cache(smollm2) -> None:  # noqa: ANN001
    """32 greedy tokens per prompt (left-padded batch) from ``attnlab.generation.generate``
    (KV cache); then one uncached forward pass over prompt + continuation must pick exactly
    the same token at every step. Causality makes that one pass equal to 32 uncached greedy
    steps: its logits at position t see only the tokens up to t."""
    loaded, _ = smollm2
    model = loaded.model
    ids, mask = _batch(loaded.tokenizer, PROMPTS, left=True)
    steps = 32
    full = generate(model, ids, GenerationConfig(max_new_tokens=steps), attention_mask=mask)
    cached = full[:, ids.shape[1] :]  # (B, 32)
    assert cached.shape == (len(PROMPTS), steps)
    mask = torch.cat((mask, torch.ones_like(cached)), dim=1)
    uncached = model(full, attention_mask=mask).logits[:, ids.shape[1] - 1 : -1].argmax(-1)
    assert torch.equal(cached, uncached)
    assert "Paris" in loaded.tokenizer.decode(cached[0].tolist())


def test_smollm2_chat_answers_paris_and_keeps_the_conversation(smollm2) -> None:  # noqa: ANN001
    loaded, _ = smollm2
    generation = GenerationConfig(max_new_tokens=24)
    session = ChatSession(
        loaded.model, loaded.tokenizer, loaded.chat_template, generation=generation
    )
    answer = session.ask("What is the capital of France?")
    assert "Paris" in answer
    prompt = loaded.tokenizer.decode(session.prompt_ids(), skip_special_tokens=False)
    assert prompt.startswith("<|im_start|>system\n")
    assert f"<|im_start|>assistant\n{answer}<|im_end|>\n" in prompt
    assert [m["role"] for m in session.messages] == ["user", "assistant"]


@pytest.mark.parametrize("dense", [False, True])
def test_chat_cli_streams_each_turn(smollm2, smollm2_quantized, dense, monkeypatch, capsys) -> None:  # noqa: ANN001
    """Packed 4-bit weights by default, ``--dense`` for the float32 ones."""
    models = {True: smollm2[0], False: smollm2_quantized}
    monkeypatch.setattr(attnlab, "from_pretrained", lambda name, quantized: models[not quantized])
    argv = ["chat", "smollm2", "-m", "What is the capital of France?", "--max-new-tokens", "12"]
    assert cli.main(argv + ["--dense"] * dense) == 0
    out = capsys.readouterr().out
    assert "you> What is the capital of France?\nassistant> " in out
    assert "Paris" in out


@torch.no_grad()
def test_smollm2_quantized_logits_stay_close_to_float32(smollm2, smollm2_quantized) -> None:  # noqa: ANN001
    """Packed 4-bit blocks (exact codes, bfloat16 scales and activations) and the Q8_0 head
    requantized to per-row int8, against the float32 dequantized model on the 5 prompts.
    The tolerance is the one the float32 -> bfloat16 model meets (measured: max 0.71,
    mean 0.11, same top-1 everywhere; the quantized model: max 0.85, mean 0.12, top-1 97%)."""
    loaded, _ = smollm2
    ids, mask = _batch(loaded.tokenizer, PROMPTS, left=False)
    real = mask.bool()
    want = loaded.model(ids, attention_mask=mask).logits[real]  # (tokens, V)
    got = smollm2_quantized.model(ids, attention_mask=mask).logits[real]
    assert got.dtype == torch.float32
    error = (got - want).abs()
    assert error.max() <= 1.5 and error.mean() <= 0.2
    assert (got.argmax(-1) == want.argmax(-1)).float().mean() >= 0.9


def test_smollm2_quantized_chat_answers_paris(smollm2_quantized) -> None:  # noqa: ANN001
    loaded = smollm2_quantized
    generation = GenerationConfig(max_new_tokens=24)
    session = ChatSession(
        loaded.model, loaded.tokenizer, loaded.chat_template, generation=generation
    )
    assert "Paris" in session.ask("What is the capital of France?")
