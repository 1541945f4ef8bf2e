"""The prepared-model cache (attnlab.interop.prepared): a cached load is the fresh load, bit
for bit; it really skips the GGUF file; a changed file misses; a damaged, unwritable or
turned-off cache never fails a load.

The suite runs with the cache off (tests/conftest.py); these tests turn it on with a
temporary ATTNLAB_CACHE."""

from __future__ import annotations

import logging
import os
import shutil
import time
from pathlib import Path

import pytest
import torch

from required import module  # noqa: E402

gguf = module("gguf")

from test_gguf import MIXED, _write_tiny_llama  # noqa: E402

from attnlab.generation.session import DecoderSession  # noqa: E402
from attnlab.interop import gguf_io, prepare_for_decoding, prepared  # noqa: E402
from attnlab.interop.chat import render_chat  # noqa: E402
from attnlab.interop.gguf_io import load_gguf  # noqa: E402
from attnlab.nn.quantized import QuantizedLinear  # noqa: E402

Q = gguf.GGMLQuantizationType
PACKED = {  # every block matrix Q4_0/Q4_1, a Q8_0 head: all packed with quantized=True
    **MIXED,
    "attn_v": Q.Q4_0,
    "attn_output": Q.Q4_1,
    "ffn_gate": Q.Q4_0,
    "ffn_down": Q.Q4_1,
    "output": Q.Q8_0,
}
TEMPLATE = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}{% endfor %}"
TEXTS = ("Hello, world!", "<|im_start|>user\nWhat is 12 + 30?<|im_end|>", "naïve café ✓ 🙂")


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The cache turned on in a temporary folder; returns its ``prepared`` folder."""
    monkeypatch.delenv(prepared.NO_CACHE_ENV, raising=False)
    monkeypatch.setenv("ATTNLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "prepared"


def _gguf_unread(monkeypatch: pytest.MonkeyPatch) -> None:
    """From here on, reading a GGUF file fails the test."""

    def refuse(path: object) -> None:
        raise AssertionError(f"the GGUF file was parsed: {path}")

    monkeypatch.setattr(gguf_io, "open_gguf", refuse)


def _entries(folder: Path) -> list[Path]:
    """The entries in the cache folder ``folder`` (not the temporary folders)."""
    if not folder.exists():
        return []
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _tiny(tmp_path: Path, tied: bool = False) -> Path:
    types = {k: v for k, v in PACKED.items() if not (tied and k == "output")}
    path = tmp_path / "tiny.gguf"
    _write_tiny_llama(path, types, chat_template=TEMPLATE)
    return path


def _run(model: torch.nn.Module, ids: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """The logits of a prefill and of ``steps`` greedy one-token steps."""
    out = []
    with torch.inference_mode():
        session = DecoderSession(model, ids, None, steps + 1)
        logits = session.prefill()
        for _ in range(steps):
            out.append(logits.clone())
            logits = session.step(logits.argmax(-1))
        out.append(logits.clone())
    return out


def _assert_same_load(got: gguf_io.GGUFContents, want: gguf_io.GGUFContents, ids: torch.Tensor):
    """Same config, layers, chat template, token ids and logits (exactly)."""
    assert got.model.config == want.model.config
    assert got.chat_template == want.chat_template
    assert got.tokenizer.special_tokens == want.tokenizer.special_tokens
    for text in TEXTS:
        assert got.tokenizer.encode(text) == want.tokenizer.encode(text)
    kinds = [(n, type(m).__name__, getattr(m, "kind", None)) for n, m in got.model.named_modules()]
    assert kinds == [
        (n, type(m).__name__, getattr(m, "kind", None)) for n, m in want.model.named_modules()
    ]
    for a, b in zip(_run(got.model, ids, 3), _run(want.model, ids, 3), strict=True):
        assert torch.equal(a, b)


@pytest.mark.parametrize(("quantized", "tied"), [(True, False), (True, True), (False, True)])
def test_tiny_cached_load_is_the_fresh_load(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, quantized: bool, tied: bool
) -> None:
    path = _tiny(tmp_path, tied)
    fresh = load_gguf(path, quantized=quantized)
    (entry,) = _entries(cache)
    assert sorted(p.name for p in entry.iterdir()) == [
        "model.safetensors",
        "prepared.json",
        "tokenizer.json",
    ]
    _gguf_unread(monkeypatch)
    cached = load_gguf(path, quantized=quantized)
    assert cached.model.config.tie_embeddings == tied
    if quantized:  # the int8 head keeps what decides its results
        assert cached.model.lm_head.refine_top == fresh.model.lm_head.refine_top > 0
    ids = torch.randint(0, 128, (1, 40), generator=torch.Generator().manual_seed(0))
    _assert_same_load(cached, fresh, ids)  # 40 positions: the prompt copies run too
    table = cached.model.stack.embeddings.tokens.weight
    if not quantized:  # a tied head is tied again
        assert cached.model.lm_head.weight is table
    prepare_for_decoding(cached.model)
    prepare_for_decoding(fresh.model)
    if quantized:  # a table only looked up is not copied column-major
        assert cached.model.stack.embeddings.tokens.weight is table and table.is_contiguous()
    else:  # the head multiplies by it: column-major, still tied
        assert cached.model.lm_head.weight is cached.model.stack.embeddings.tokens.weight
        assert cached.model.lm_head.weight.t().is_contiguous()
    _assert_same_load(cached, fresh, ids)  # and both re-stored alike


def test_cached_tensors_are_private_memory(tmp_path: Path, cache: Path) -> None:
    """Writing into a cached model's weights changes neither the cache nor a later load."""
    path = _tiny(tmp_path)
    load_gguf(path)
    first = load_gguf(path).model
    before = first.stack.embeddings.tokens.weight.clone()
    with torch.no_grad():
        first.stack.embeddings.tokens.weight.add_(1.0)
    assert torch.equal(load_gguf(path).model.stack.embeddings.tokens.weight, before)


def test_a_changed_gguf_file_misses_and_replaces_its_entry(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _tiny(tmp_path)
    load_gguf(path, quantized=True)
    (old,) = _entries(cache)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # touched
    parsed = []
    real = gguf_io.open_gguf
    monkeypatch.setattr(gguf_io, "open_gguf", lambda p: parsed.append(p) or real(p))
    load_gguf(path, quantized=True)
    assert parsed == [path]
    (new,) = _entries(cache)  # the old entry of the same file is gone
    assert new != old
    load_gguf(path, quantized=False)  # another kind of load has its own entry
    assert len(_entries(cache)) == 2 and len(parsed) == 2


@pytest.mark.parametrize(
    ("damage", "file"),
    [
        ("truncate", "model.safetensors"),
        ("garbage", "prepared.json"),
        ("format", "prepared.json"),
        ("garbage", "tokenizer.json"),
        ("remove", "model.safetensors"),
    ],
)
def test_a_damaged_entry_is_logged_once_and_the_file_loads(
    tmp_path: Path,
    cache: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    file: str,
) -> None:
    path = _tiny(tmp_path)
    fresh = load_gguf(path, quantized=True)
    (entry,) = _entries(cache)
    target = entry / file
    if damage == "truncate":
        with open(target, "r+b") as f:
            f.truncate(target.stat().st_size // 2)
    elif damage == "garbage":
        target.write_text("{not json", encoding="utf-8")
    elif damage == "format":
        target.write_text('{"format": 0}', encoding="utf-8")
    else:
        target.unlink()
    with caplog.at_level(logging.WARNING, logger="attnlab"):
        again = load_gguf(path, quantized=True)
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert str(target) in record.getMessage() and "\n" not in record.getMessage()
    ids = torch.randint(0, 128, (1, 6), generator=torch.Generator().manual_seed(0))
    _assert_same_load(again, fresh, ids)
    _gguf_unread(monkeypatch)  # the entry was written again: the next load maps it
    _assert_same_load(load_gguf(path, quantized=True), fresh, ids)


def test_an_unwritable_cache_folder_is_logged_and_the_load_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv(prepared.NO_CACHE_ENV, raising=False)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be", encoding="utf-8")
    monkeypatch.setenv("ATTNLAB_CACHE", str(blocker))
    with caplog.at_level(logging.WARNING, logger="attnlab"):
        loaded = load_gguf(_tiny(tmp_path), quantized=True)
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "not written" in record.getMessage() and str(blocker) in record.getMessage()
    assert isinstance(loaded.model.lm_head, QuantizedLinear)


def test_a_key_that_cannot_be_made_is_logged_and_the_load_goes_on(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreadable() -> str:
        raise PermissionError(13, "Permission denied")  # attnlab's source, say

    monkeypatch.setattr(prepared, "_code_version", unreadable)
    with caplog.at_level(logging.WARNING, logger="attnlab"):
        loaded = load_gguf(_tiny(tmp_path), quantized=True)
    (record,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "not used" in record.getMessage() and "Permission denied" in record.getMessage()
    assert isinstance(loaded.model.lm_head, QuantizedLinear) and not cache.exists()


def test_a_write_that_dies_midway_leaves_no_entry(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry appears by one rename of a finished folder: a failure before it leaves
    nothing under the key, and no temporary folder either."""

    def crash(folder: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(prepared, "fsync_tree", crash)  # after the files, before the rename
    path = _tiny(tmp_path)
    load_gguf(path, quantized=True)
    assert list(cache.iterdir()) == []


def test_an_entry_another_process_wrote_meanwhile_is_kept(tmp_path: Path, cache: Path) -> None:
    path = _tiny(tmp_path)
    loaded = load_gguf(path, quantized=True)
    (entry,) = _entries(cache)
    inode = (entry / "model.safetensors").stat().st_ino
    contents = loaded.model, loaded.tokenizer, loaded.chat_template
    prepared.write_prepared(entry, path, *contents, torch.float32, True)  # lost the race
    assert (entry / "model.safetensors").stat().st_ino == inode
    assert list(cache.iterdir()) == [entry]  # no temporary folder left


def test_the_opt_out_variable_bypasses_the_cache(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _tiny(tmp_path)
    monkeypatch.setenv(prepared.NO_CACHE_ENV, "1")
    load_gguf(path)
    assert not cache.exists()  # nothing written
    monkeypatch.delenv(prepared.NO_CACHE_ENV)
    load_gguf(path)
    assert len(_entries(cache)) == 1
    monkeypatch.setenv(prepared.NO_CACHE_ENV, "1")
    _gguf_unread(monkeypatch)
    with pytest.raises(AssertionError, match="the GGUF file was parsed"):
        load_gguf(path)  # an entry exists, but is not read


def _chat_ids(loaded: gguf_io.GGUFContents) -> torch.Tensor:
    text = render_chat(loaded.chat_template, [{"role": "user", "content": "Name three colors."}])
    return torch.tensor([loaded.tokenizer.encode(text)])


def test_smollm2_packed_cached_load_is_identical_and_faster(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from attnlab.interop import resolve_name
    from required import missing

    try:
        path = resolve_name("smollm2")
    except FileNotFoundError as err:
        missing(str(err))
    start = time.perf_counter()
    fresh = load_gguf(path, quantized=True)  # parses the file and writes the entry
    cold = time.perf_counter() - start
    _gguf_unread(monkeypatch)
    start = time.perf_counter()
    cached = load_gguf(path, quantized=True)
    warm = time.perf_counter() - start
    assert warm * 3 < cold, f"cached load {warm:.2f} s, fresh load {cold:.2f} s"
    ids = _chat_ids(fresh)
    assert ids.shape[1] >= 32  # a prompt long enough for the bfloat16 prompt copies
    _assert_same_load(cached, fresh, ids)


def test_smollm2_float32_cached_load_is_identical(pretrained, cache: Path, monkeypatch) -> None:  # noqa: ANN001
    """The dense load, written from the session's own fresh load of the file."""
    fresh = pretrained("smollm2")
    entry = prepared.prepared_entry(fresh.path, torch.float32, False)
    prepared.write_prepared(
        entry, fresh.path, fresh.model, fresh.tokenizer, fresh.chat_template, torch.float32, False
    )
    _gguf_unread(monkeypatch)
    cached = load_gguf(fresh.path)
    want = gguf_io.GGUFContents(fresh.model, fresh.tokenizer, fresh.chat_template)
    _assert_same_load(cached, want, _chat_ids(want))
    shutil.rmtree(entry)  # 540 MB
