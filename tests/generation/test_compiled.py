"""The compiled one-token step (attnlab.generation.compiled): made once, found on disk by
later sessions, equal to the eager step to rounding, and never used where it does not
belong (other weights, a broken library, switched off, the serving scheduler)."""

from __future__ import annotations

import logging
import shutil

import pytest
import torch

from attnlab.cli import main
from attnlab.data.cache import CACHE_ENV
from attnlab.generation import DecoderSession, GenerationConfig, generate
from attnlab.generation import compiled as compiled_module
from attnlab.generation.batching import BatchScheduler, DecodeRequest, TokenEvent

ATOL = 1e-4  # float32 tiny model: Inductor's fused loops round differently from the kernels


@pytest.fixture(scope="module")
def libraries(tmp_path_factory):  # noqa: ANN201
    """$ATTNLAB_CACHE in a folder of this module's own."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("cache")
        patch.setenv(CACHE_ENV, str(root))
        patch.delenv(compiled_module.DISABLE_ENV, raising=False)
        yield root / "compiled"


@pytest.fixture(scope="module")
def model(libraries):  # noqa: ANN201
    """A tiny RoPE decoder with grouped keys/values whose step is compiled once."""
    from tests.generation.conftest import _tiny_decoder

    model = _tiny_decoder("rope", 2, init_std=0.02, max_seq_len=64)
    path = compiled_module.compile_step(model)
    assert path.parent == libraries and path.name == f"{compiled_module.step_key(model)}.so"
    return model


def _counting(monkeypatch) -> list[int]:  # noqa: ANN001
    """Count the compiled step's calls."""
    calls: list[int] = []
    original = compiled_module.CompiledStep.__call__

    def counted(self, *args):  # noqa: ANN001, ANN202
        calls.append(1)
        return original(self, *args)

    monkeypatch.setattr(compiled_module.CompiledStep, "__call__", counted)
    return calls


def _step_logits(model, prompt, feed, compiled: bool) -> list[torch.Tensor]:  # noqa: ANN001
    with torch.inference_mode():
        session = DecoderSession(model, prompt, None, feed.shape[1])
        session.use_traced_step(compiled=compiled)
        out = [session.prefill()]
        for t in range(feed.shape[1]):
            out.append(session.step(feed[:, t]))
        return out


def test_compiled_step_gives_the_eager_logits_past_the_window(model, monkeypatch):
    calls = _counting(monkeypatch)
    gen = torch.Generator().manual_seed(3)
    prompt = torch.randint(0, 32, (1, 5), generator=gen)
    feed = torch.randint(0, 32, (1, 70), generator=gen)  # 75 tokens: the window (64) slides
    eager = _step_logits(model, prompt, feed, compiled=False)
    ours = _step_logits(model, prompt, feed, compiled=True)
    # every step ran compiled until the window (64) was full; from then on each step
    # refills it eagerly (the context rule of attnlab.generation.session)
    assert len(calls) == 64 - 5 + 1
    for step, (a, b) in enumerate(zip(eager, ours, strict=True)):
        torch.testing.assert_close(b, a, atol=ATOL, rtol=0, msg=f"step {step}")


def test_generate_uses_it_and_gives_the_same_tokens(model, monkeypatch):
    calls = _counting(monkeypatch)
    prompt = torch.randint(0, 32, (1, 4), generator=torch.Generator().manual_seed(4))
    plain = GenerationConfig(max_new_tokens=40, traced_step=True, compiled_step=False)
    eager = generate(model, prompt, plain)
    assert not calls
    fast = generate(model, prompt, GenerationConfig(max_new_tokens=40, traced_step=True))
    assert len(calls) >= 38
    assert torch.equal(fast, eager)
    # a batch of two rows, or padding, decodes without it
    calls.clear()
    two = generate(model, prompt.repeat(2, 1), GenerationConfig(max_new_tokens=40))
    assert not calls and torch.equal(two[0], eager[0])


def test_a_new_process_finds_the_library_without_compiling(model, monkeypatch, caplog):
    compiled_module.STEPS.forget(model)

    def no_compiling(*args):  # noqa: ANN002, ANN202
        raise AssertionError("compiled again")

    monkeypatch.setattr(torch._inductor, "aoti_compile_and_package", no_compiling)
    with caplog.at_level(logging.INFO, logger=compiled_module.__name__):
        step = compiled_module.load_step(model)
    assert step is not None and "loaded" in caplog.text
    assert compiled_module.load_step(model) is step  # looked up once per model


def test_other_weights_never_use_the_library(model, libraries, caplog):
    from tests.generation.conftest import _tiny_decoder

    other = _tiny_decoder("rope", 2, seed=1, init_std=0.02, max_seq_len=64)
    assert compiled_module.step_key(other) != compiled_module.step_key(model)
    with caplog.at_level(logging.INFO, logger=compiled_module.__name__):
        assert compiled_module.load_step(other) is None
    assert "none made for this model" in caplog.text
    assert compiled_module.step_key(other) in caplog.text
    # the library copied under the other model's name: the check against the eager step
    # rejects it, and decoding goes on with the recorded step
    shutil.copy(
        libraries / f"{compiled_module.step_key(model)}.so",
        libraries / f"{compiled_module.step_key(other)}.so",
    )
    compiled_module.STEPS.forget(other)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=compiled_module.__name__):
        assert compiled_module.load_step(other) is None
    assert "differ from the eager step" in caplog.text
    prompt = torch.tensor([[1, 2, 3]])
    plain = GenerationConfig(max_new_tokens=30, traced_step=True, compiled_step=False)
    assert torch.equal(
        generate(other, prompt, GenerationConfig(max_new_tokens=30)),
        generate(other, prompt, plain),
    )


def test_a_broken_library_is_named_and_skipped(libraries, caplog):
    from tests.generation.conftest import _tiny_decoder

    broken = _tiny_decoder("rope", 2, seed=2, init_std=0.02, max_seq_len=64)
    path = libraries / f"{compiled_module.step_key(broken)}.so"
    path.write_bytes(b"not a shared library")
    with caplog.at_level(logging.INFO, logger=compiled_module.__name__):
        assert compiled_module.load_step(broken) is None
    assert str(path) in caplog.text and "cannot be used" in caplog.text


def test_switched_off_by_the_environment(model, monkeypatch, caplog):
    compiled_module.STEPS.forget(model)
    monkeypatch.setenv(compiled_module.DISABLE_ENV, "0")
    with caplog.at_level(logging.INFO, logger=compiled_module.__name__):
        assert compiled_module.load_step(model) is None
    assert "ATTNLAB_COMPILED_STEP=0" in caplog.text
    compiled_module.STEPS.forget(model)


def test_serving_keeps_the_recorded_step(model, monkeypatch):
    calls = _counting(monkeypatch)
    config = GenerationConfig(max_new_tokens=30)
    with BatchScheduler(model, None) as scheduler:  # a lone row replays the recorded step
        events = list(scheduler.submit(DecodeRequest([1, 2, 3, 4], config)).events(timeout=60))
    served = [e.token_id for e in events if isinstance(e, TokenEvent)]
    assert len(served) == 30 and not calls
    assert served == generate(model, torch.tensor([[1, 2, 3, 4]]), config)[0, 4:].tolist()


def test_not_made_for_models_it_cannot_take(tiny_seq2seq):
    with pytest.raises(ValueError, match="not a decoder-only model"):
        compiled_module.compile_step(tiny_seq2seq())


def test_compile_command(model, tmp_path, capsys, monkeypatch):
    from attnlab.checkpoint import save_pretrained

    save_pretrained(tmp_path / "tiny", model, None)
    # the same weights saved and loaded again: the library made above is found by content
    assert main(["compile", str(tmp_path / "tiny"), "--for", "generate"]) == 0
    assert "already compiled" in capsys.readouterr().out
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))  # none there yet
    assert main(["compile", str(tmp_path / "tiny"), "--for", "generate"]) == 0
    out = capsys.readouterr().out
    assert "compiled in" in out and str(tmp_path / "cache" / "compiled") in out


def test_threads_share_one_compiled_step(model, monkeypatch):
    import threading

    calls = _counting(monkeypatch)
    prompts = [torch.tensor([[i + 1, i + 2, i + 3]]) for i in range(4)]
    config = GenerationConfig(max_new_tokens=40, traced_step=True)
    alone = [generate(model, p, config) for p in prompts]
    together: list[torch.Tensor | None] = [None] * len(prompts)

    def decode(i: int) -> None:
        together[i] = generate(model, prompts[i], config)

    threads = [threading.Thread(target=decode, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) >= 2 * len(prompts) * 38  # every step of both rounds ran compiled
    assert all(torch.equal(a, b) for a, b in zip(alone, together, strict=True))
