"""Property tests: a small valid GGUF file, a safetensors file (a Hugging Face folder) and
an attnlab model folder, truncated at every offset (through the headers; every 61st byte
of tensor data) and with random bytes flipped. Every
case either loads or raises one ValueError whose one line names the file's folder; none
hangs (each case is timed), none grows the process by more than a bounded amount.

``pytest -s`` prints how many cases ran (``FUZZ_CASES``).
"""

from __future__ import annotations

import resource
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from attnlab import ModelConfig, build_model
from attnlab.checkpoint import save_pretrained
from attnlab.interop import save_hf_model
from attnlab.interop.pretrained import from_pretrained
from attnlab.tokenizers import train_char_tokenizer

gguf = pytest.importorskip("gguf")

FUZZ_CASES: Counter[str] = Counter()
FUZZ_OUTCOMES: Counter[str] = Counter()
MAX_SECONDS = 5.0  # one case; the slowest seen is a few milliseconds
MAX_GROWTH_MB = 300  # the whole module's growth of the peak resident memory
FLIPS = settings(
    max_examples=150,
    deadline=None,  # timed by _case itself, with a margin for a busy machine
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
CONFIG = ModelConfig(vocab_size=16, d_model=16, n_heads=2, n_layers=1, max_seq_len=8)


@pytest.fixture(scope="module", autouse=True)
def _bounded_memory() -> Iterator[None]:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    yield
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    total = sum(FUZZ_CASES.values())
    print(f"\nFUZZ_CASES {dict(FUZZ_CASES)}")
    print(f"total {total} {dict(FUZZ_OUTCOMES)}; peak memory grew {grown:.0f} MB")
    assert grown < MAX_GROWTH_MB


def _case(kind: str, load: Callable[[], object], names: Path) -> None:
    """Run one load: it succeeds or raises one ValueError line naming ``names``."""
    start = time.perf_counter()
    outcome = "loaded"
    try:
        load()
    except ValueError as err:
        message = str(err)
        assert str(names) in message, message
        assert "\n" not in message, message
        outcome = "refused"
    FUZZ_OUTCOMES[outcome] += 1
    assert time.perf_counter() - start < MAX_SECONDS
    FUZZ_CASES[kind] += 1


def _write(path: Path, data: bytes) -> None:
    """Write ``data`` as a new file at ``path``. Not ``path.write_bytes``: truncating a file
    that holds data makes ext4 write it to disk at close (its auto_da_alloc), a millisecond
    or more per case here, thousands of cases per test."""
    path.unlink(missing_ok=True)
    path.write_bytes(data)


def _flip(data: bytes, flips: list[tuple[int, int]]) -> bytes:
    out = bytearray(data)
    for position, value in flips:
        out[position % len(out)] ^= value
    return bytes(out)


FLIP_LISTS = st.lists(st.tuples(st.integers(0, 2**20), st.integers(1, 255)), min_size=1, max_size=8)


# -- GGUF ---------------------------------------------------------------------------------


def _tiny_gguf(path: Path) -> Path:
    """A 1-layer Llama with a byte-level BPE vocabulary of 24 tokens (F32 and Q8_0)."""
    width, ff, vocab = 32, 32, 24
    rng = np.random.default_rng(0)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(width)
    writer.add_feed_forward_length(ff)
    writer.add_head_count(2)
    writer.add_head_count_kv(2)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    writer.add_token_list(["<s>", "</s>", "ab"] + [chr(0x61 + i) for i in range(vocab - 3)])
    writer.add_token_types([3, 3] + [1] * (vocab - 2))
    writer.add_token_merges(["a b"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(1)
    writer.add_chat_template("{% for m in messages %}{{ m.content }}{% endfor %}")

    def add(name: str, rows: int, cols: int, q8: bool = False) -> None:
        values = rng.standard_normal((rows, cols)).astype(np.float32)
        if q8:
            quantized = gguf.quants.quantize(values, gguf.GGMLQuantizationType.Q8_0)
            writer.add_tensor(name, quantized, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
        else:
            writer.add_tensor(name, values[0] if rows == 1 else values)

    add("token_embd.weight", vocab, width, q8=True)
    add("output_norm.weight", 1, width)
    add("blk.0.attn_norm.weight", 1, width)
    add("blk.0.ffn_norm.weight", 1, width)
    for name, rows, cols in [
        ("attn_q", width, width),
        ("attn_k", width, width),
        ("attn_v", width, width),
        ("attn_output", width, width),
        ("ffn_gate", ff, width),
        ("ffn_up", ff, width),
        ("ffn_down", width, ff),
    ]:
        add(f"blk.0.{name}.weight", rows, cols, q8=name == "attn_v")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def gguf_bytes(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = _tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    from_pretrained(path)  # the original loads
    return path.read_bytes()


def _offsets(size: int, header_end: int) -> list[int]:
    """Every offset through the header (and 64 bytes past it), then every 61st: a cut in
    the tensor data fails as any other there does."""
    return [*range(min(size, header_end + 64)), *range(header_end + 64, size, 61)]


def test_gguf_truncated_at_every_offset(gguf_bytes: bytes, tmp_path: Path) -> None:
    path = tmp_path / "cut.gguf"
    (tmp_path / "whole.gguf").write_bytes(gguf_bytes)
    data_offset = gguf.GGUFReader(tmp_path / "whole.gguf").data_offset
    for end in _offsets(len(gguf_bytes), data_offset):
        _write(path, gguf_bytes[:end])
        _case("gguf truncated", lambda: from_pretrained(path), path)


@FLIPS
@given(flips=FLIP_LISTS)
def test_gguf_with_flipped_bytes(gguf_bytes: bytes, tmp_path: Path, flips) -> None:
    path = tmp_path / "flipped.gguf"
    _write(path, _flip(gguf_bytes, flips))
    _case("gguf flipped", lambda: from_pretrained(path), path)


@FLIPS
@given(flips=FLIP_LISTS, header=st.booleans())
def test_gguf_header_with_flipped_bytes(gguf_bytes: bytes, tmp_path: Path, flips, header) -> None:
    """Flips within the metadata and tensor table (the first 1.5 KB), where most land."""
    path = tmp_path / "flipped.gguf"
    span = 1536 if header else len(gguf_bytes)
    _write(path, _flip(gguf_bytes, [(p % span, v) for p, v in flips]))
    _case("gguf header flipped", lambda: from_pretrained(path), path)


# -- safetensors (a Hugging Face folder) ----------------------------------------------------


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_hf_model(build_model(CONFIG), tmp_path_factory.mktemp("hf") / "hf")


def _hf_copy(hf_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "hf"
    if not folder.exists():
        shutil.copytree(hf_folder, folder)
    return folder


def test_safetensors_truncated_at_every_offset(hf_folder: Path, tmp_path: Path) -> None:
    folder = _hf_copy(hf_folder, tmp_path)
    data = (hf_folder / "model.safetensors").read_bytes()
    for end in _offsets(len(data), int.from_bytes(data[:8], "little") + 8):
        _write(folder / "model.safetensors", data[:end])
        _case("safetensors truncated", lambda: from_pretrained(folder), folder)


@FLIPS
@given(flips=FLIP_LISTS, header=st.booleans())
def test_safetensors_with_flipped_bytes(hf_folder: Path, tmp_path: Path, flips, header) -> None:
    folder = _hf_copy(hf_folder, tmp_path)
    data = (hf_folder / "model.safetensors").read_bytes()
    span = int.from_bytes(data[:8], "little") + 8 if header else len(data)
    _write(folder / "model.safetensors", _flip(data, [(p % span, v) for p, v in flips]))
    _case("safetensors flipped", lambda: from_pretrained(folder), folder)


@FLIPS
@given(flips=FLIP_LISTS)
def test_hf_config_with_flipped_bytes(hf_folder: Path, tmp_path: Path, flips) -> None:
    folder = _hf_copy(hf_folder, tmp_path)
    data = (hf_folder / "config.json").read_bytes()
    _write(folder / "config.json", _flip(data, flips))
    _case("hf config flipped", lambda: from_pretrained(folder), folder)


# -- an attnlab model folder ----------------------------------------------------------------

MODEL_FILES = ("config.json", "tokenizer.json", "model.safetensors")


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("model") / "m"
    return save_pretrained(folder, build_model(CONFIG), train_char_tokenizer("abcdefghij"))


def _model_copy(model_folder: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "m"
    if not folder.exists():
        shutil.copytree(model_folder, folder)
    for name in MODEL_FILES:
        _write(folder / name, (model_folder / name).read_bytes())
    return folder


@pytest.mark.parametrize("name", MODEL_FILES)
def test_model_folder_truncated_at_every_offset(
    model_folder: Path, tmp_path: Path, name: str
) -> None:
    folder = _model_copy(model_folder, tmp_path)
    data = (model_folder / name).read_bytes()
    header = int.from_bytes(data[:8], "little") + 8 if name.endswith(".safetensors") else 0
    for end in _offsets(len(data), header or len(data)):
        _write(folder / name, data[:end])
        _case(f"model folder {name} truncated", lambda: from_pretrained(folder), folder)


@FLIPS
@given(flips=FLIP_LISTS, which=st.sampled_from(MODEL_FILES))
def test_model_folder_with_flipped_bytes(model_folder: Path, tmp_path: Path, flips, which) -> None:
    folder = _model_copy(model_folder, tmp_path)
    data = (model_folder / which).read_bytes()
    _write(folder / which, _flip(data, flips))
    _case("model folder flipped", lambda: from_pretrained(folder), folder)
