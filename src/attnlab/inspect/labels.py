"""Token labels as text: the decoded text of each token of a sequence, for pictures and pages.

A byte-level BPE vocabulary (GPT-2, SmolLM2, the BPE we train) spells bytes as symbols
('Ġ' is a space, 'Ã¤' the two bytes of 'ä'); sentencepiece byte fallback spells them
``<0xC3>``. Both are read back as bytes and decoded as UTF-8 over the whole sequence, so
"läuft" reads "läuft". A character whose bytes are split over several tokens is shown on
the token that holds its first byte; a token left with only the continuation bytes of such
a character (or bytes that are not UTF-8) shows them as ``<0xA4>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from functools import lru_cache

# shown instead of characters a label cannot show as they are
_DISPLAY = {"\u0120": " ", "\u2581": " ", "\u010a": "\\n", "\n": "\\n", "\t": "\\t", "\r": "\\r"}
_BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")


@lru_cache(maxsize=1)
def byte_symbols() -> dict[str, int]:
    """The byte-level BPE alphabet (GPT-2's ``bytes_to_unicode``): symbol -> byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    symbols = {chr(b): b for b in printable}
    extra = 0
    for b in range(256):
        if b not in printable:
            symbols[chr(256 + extra)] = b
            extra += 1
    return symbols


def is_byte_level(tokenizer: object) -> bool:
    """Whether ``tokenizer`` (an ``attnlab.tokenizers.Tokenizer``) spells its tokens in the
    byte-level alphabet: its Hugging Face pipeline decodes with ``ByteLevel``."""
    hf = getattr(tokenizer, "hf", None)
    if hf is None:
        return False
    try:
        # the decoder's own JSON (a few bytes; the whole tokenizer's, 2 MB for SmolLM2, took
        # 100 ms a call, paid by every request a server streamed)
        decoder = json.loads(hf.decoder.__getstate__()) if hf.decoder is not None else None
    except (AttributeError, ValueError, TypeError):
        return False
    return '"ByteLevel"' in json.dumps(decoder)


def _token_bytes(token: str, byte_level: bool) -> bytes | None:
    """The bytes a vocabulary entry stands for, or None when it is plain text."""
    match = _BYTE_TOKEN.fullmatch(token)
    if match:
        return bytes([int(match.group(1), 16)])
    if byte_level:
        symbols = byte_symbols()
        if all(ch in symbols for ch in token):
            return bytes(symbols[ch] for ch in token)
    return None


def _show(text: str) -> str:
    text = "".join(_DISPLAY.get(ch, ch) for ch in text)
    return text.replace(" ", "\u2423") if not text.strip() else text  # a visible space


def _utf8_length(lead: int) -> int:
    if lead < 0x80:
        return 1
    if 0xC2 <= lead <= 0xDF:
        return 2
    if 0xE0 <= lead <= 0xEF:
        return 3
    if 0xF0 <= lead <= 0xF4:
        return 4
    return 0  # a continuation byte or a byte that never starts a character


def _decode_run(chunks: list[bytes]) -> list[str]:
    """Labels of consecutive byte tokens: each character goes to the token holding its
    first byte; bytes that are no (complete) character are shown as ``<0xNN>``."""
    stream = b"".join(chunks)
    owner = [i for i, chunk in enumerate(chunks) for _ in chunk]  # byte -> token
    labels = [""] * len(chunks)
    shown = [False] * len(chunks)
    p = 0
    while p < len(stream):
        n = _utf8_length(stream[p])
        try:
            char = stream[p : p + n].decode("utf-8") if n else None
        except UnicodeDecodeError:
            char = None
        if char is None or p + n > len(stream):
            labels[owner[p]] += f"<0x{stream[p]:02X}>"
            shown[owner[p]] = True
            p += 1
            continue
        labels[owner[p]] += char
        for q in range(p, p + n):
            shown[owner[q]] = shown[owner[q]] or q == p
        p += n
    for i, chunk in enumerate(chunks):
        if not shown[i]:  # only continuation bytes of a character shown on an earlier token
            labels[i] = "".join(f"<0x{b:02X}>" for b in chunk)
    return labels


def token_labels(tokens: Sequence[str | None], ids: Sequence[int], byte_level: bool) -> list[str]:
    """One readable label per token: ``tokens`` are the vocabulary entries of ``ids``
    (None: an id the vocabulary lacks, shown as ``<id>``)."""
    labels: list[str] = []
    run: list[bytes] = []

    def flush() -> None:
        labels.extend(_show(text) for text in _decode_run(run))
        run.clear()

    for token, token_id in zip(tokens, ids, strict=True):
        as_bytes = None if token is None else _token_bytes(token, byte_level)
        if as_bytes is not None and as_bytes:
            run.append(as_bytes)
            continue
        flush()
        labels.append(f"<{token_id}>" if token is None else _show(token))
    flush()
    return labels
