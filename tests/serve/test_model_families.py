"""Every family through the real server: embeddings from MiniLM equal to ``attnlab embed``,
translation and classification from tiny trained runs equal to the library's, attention
maps of each family (cross-attention included) equal to ``attnlab.inspect.attention``,
tokenize/detokenize, the loading 503 and SmolLM2 (packed int4) through the openai client."""

from __future__ import annotations

import json

import httpx
import pytest
import torch

from attnlab.interop.pretrained import from_pretrained


def test_embeddings_equal_attnlab_embed(minilm, capsys) -> None:
    from attnlab.cli import main

    sentences = ["A man is eating food.", "Someone eats a meal.", "The sky is blue today."]
    assert main(["embed", "minilm", *sentences, "--json"]) == 0
    expected = torch.tensor(json.loads(capsys.readouterr().out)["embeddings"])
    client = minilm.client()
    floats = client.embeddings.create(model="minilm", input=sentences, encoding_format="float")
    got = torch.tensor([d.embedding for d in floats.data])
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # the client's default (base64 floats) decodes to the same vectors
    default = client.embeddings.create(model="minilm", input=sentences)
    torch.testing.assert_close(torch.tensor([d.embedding for d in default.data]), got)
    one = client.embeddings.create(model="minilm", input=sentences[2], encoding_format="float")
    torch.testing.assert_close(torch.tensor(one.data[0].embedding), expected[2], atol=1e-5, rtol=0)
    assert floats.usage.prompt_tokens == sum(
        len(httpx.post(minilm.url + "/tokenize", json={"prompt": s}).json()["tokens"])
        for s in sentences
    )


def test_translate_equals_the_library(translator) -> None:
    from attnlab.tasks.translation import translate

    loaded = from_pretrained(translator.model)
    sentences = ["a b c d", "h g f", "c c a"]
    for beams in (1, 3):
        r = httpx.post(
            translator.url + "/v1/translate",
            json={"input": sentences, "num_beams": beams, "max_tokens": 8},
        )
        assert r.status_code == 200, r.text
        got = [d["text"] for d in r.json()["data"]]
        expected = translate(
            loaded.model, loaded.tokenizer, sentences, num_beams=beams, max_new_tokens=8
        )
        assert got == expected


def test_classify_equals_the_library(classifier) -> None:
    from attnlab.tasks.classification import classify

    loaded = from_pretrained(classifier.model)
    texts = ["a good film", "a dull film", "fun"]
    r = httpx.post(classifier.url + "/v1/classify", json={"input": texts, "model": "classify-run"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    expected = classify(loaded.model, loaded.tokenizer, texts)
    assert [d["label"] for d in data] == [e["label"] for e in expected]
    for d, e in zip(data, expected, strict=True):
        assert set(d["scores"]) == {"neg", "pos"}
        assert d["probability"] == pytest.approx(e["probability"], abs=1e-6)
        assert sum(d["scores"].values()) == pytest.approx(1.0, abs=1e-6)


def _maps(server, **body) -> dict:
    r = httpx.post(server.url + "/v1/attention", json=body, timeout=60)
    assert r.status_code == 200, r.text
    return r.json()


def test_attention_of_every_family_equals_inspect(decoder, minilm, translator) -> None:
    from attnlab.inspect.attention import attention_maps

    cases = [
        (decoder, {"input": "hello world"}, {"text": "hello world"}),
        (minilm, {"input": "The cat sat."}, {"text": "The cat sat."}),
        (
            translator,
            {"input": "a b c", "completion": "c b a"},
            {"source": "a b c", "target": "c b a"},
        ),
    ]
    for server, body, reference in cases:
        got = _maps(server, **body)
        loaded = from_pretrained(server.model)
        expected = attention_maps(loaded.model, loaded.tokenizer, **reference)
        assert [m["kind"] for m in got["maps"]] == list(expected)
        for m in got["maps"]:
            ref = expected[m["kind"]]
            assert m["query_tokens"] == ref.query_tokens
            assert m["key_tokens"] == ref.key_tokens
            weights = torch.tensor(m["weights"])  # (L, H, Tq, Tk)
            assert weights.shape == ref.weights.shape
            torch.testing.assert_close(weights, ref.weights, atol=2e-6, rtol=0)
    # encoder-decoder: cross-attention is (target x source)
    cross = next(
        m
        for m in _maps(translator, input="a b c", completion="c b a")["maps"]
        if m["kind"] == "cross"
    )
    assert len(cross["query_tokens"]) == len(torch.tensor(cross["weights"])[0, 0])


def test_attention_of_a_prompt_and_its_generated_completion(decoder) -> None:
    got = _maps(decoder, prompt="hello", max_tokens=5, layer=1, head=0)
    completion = decoder.client().completions.create(
        model="tiny-decoder", prompt="hello", max_tokens=5, temperature=0
    )
    assert got["completion"] == completion.choices[0].text
    [m] = got["maps"]
    assert m["layer_ids"] == [1] and m["head_ids"] == [0]
    n = got["prompt_tokens"] + completion.usage.completion_tokens
    assert torch.tensor(m["weights"]).shape == (1, 1, n, n)
    rows = torch.tensor(m["weights"])[0, 0]
    torch.testing.assert_close(rows.sum(-1), torch.ones(n), atol=1e-5, rtol=0)
    assert torch.all(rows.triu(1) == 0)  # causal


def test_tokenize_and_detokenize_round_trip(decoder) -> None:
    text = "Grüße aus Köln!"
    r = httpx.post(decoder.url + "/tokenize", json={"prompt": text}).json()
    loaded = from_pretrained(decoder.model)
    assert r["tokens"] == loaded.tokenizer.encode(text)
    assert r["count"] == len(r["tokens"]) and r["max_model_len"] == 96
    back = httpx.post(decoder.url + "/detokenize", json={"tokens": r["tokens"]}).json()
    assert back["prompt"] == text


def test_models_lists_the_served_model(decoder, translator) -> None:
    [card] = decoder.client().models.list().data
    assert card.id == "tiny-decoder"
    assert card.model_extra["family"] == "decoder"
    assert card.model_extra["context_length"] == 96
    card = httpx.get(translator.v1 + "/models").json()["data"][0]
    assert card["family"] == "encoder_decoder" and card["id"] == "translate-run"


def test_health_is_503_with_an_error_body_while_the_model_loads(smollm2) -> None:
    seen = smollm2.health_seen
    assert seen[0][0] == 503, seen  # SmolLM2 takes seconds to load: the first answer waits
    assert seen[0][1]["error"]["code"] == "model_loading"
    assert seen[-1][0] == 200


def test_smollm2_chats_packed_through_the_client(smollm2) -> None:
    client = smollm2.client()
    reply = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12,
        temperature=0,
    )
    assert "Paris" in reply.choices[0].message.content
    stream = client.chat.completions.create(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=12,
        temperature=0,
        stream=True,
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == reply.choices[0].message.content


def test_ignore_eos_generates_every_asked_token(smollm2) -> None:
    """vLLM's and llama.cpp's ignore_eos (what bench/serve.py asks of both servers): the
    reply goes on past the end of its turn, to max_tokens."""
    ask = dict(
        model="smollm2",
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=24,
        temperature=0,
    )
    client = smollm2.client()
    ended = client.chat.completions.create(**ask)
    assert ended.choices[0].finish_reason == "stop" and ended.usage.completion_tokens < 24
    full = client.chat.completions.create(**ask, extra_body={"ignore_eos": True})
    assert full.choices[0].finish_reason == "length" and full.usage.completion_tokens == 24
    text = full.choices[0].message.content
    assert text.startswith(ended.choices[0].message.content)  # greedy: the same start
    wrong = httpx.post(smollm2.v1 + "/chat/completions", json={**ask, "ignore_eos": "yes"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "ignore_eos"


def test_smollm2_seeded_sampling_is_the_same_alone_and_in_a_busy_batch(smollm2) -> None:
    """The packed int4 path batches its linear layers in one kernel call: a seeded request
    still gives the same tokens alone and among 3 concurrent others."""
    import asyncio

    messages = [{"role": "user", "content": "Name a colour."}]
    ask = dict(model="smollm2", messages=messages, max_tokens=12, temperature=0.8, seed=5)
    alone = smollm2.client().chat.completions.create(**ask).choices[0].message.content

    async def busy() -> str:
        client = smollm2.async_client()
        others = [
            client.chat.completions.create(
                model="smollm2",
                messages=[{"role": "user", "content": f"Count to {i + 3}."}],
                max_tokens=16,
                seed=i,
            )
            for i in range(3)
        ]
        *_, mine = await asyncio.gather(*others, client.chat.completions.create(**ask))
        return mine.choices[0].message.content

    assert asyncio.run(busy()) == alone
