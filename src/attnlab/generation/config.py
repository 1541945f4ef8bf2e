"""``GenerationConfig``: every decoding option, validated like ``ModelConfig``."""

from __future__ import annotations

from dataclasses import dataclass, field

from attnlab.config import _JsonConfig

TRACE_MIN_TOKENS = 32  # below this, GenerationConfig(traced_step=None) steps eagerly


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class GenerationConfig(_JsonConfig):
    """Options of greedy decoding, sampling and beam search.

    Decoding is greedy unless ``do_sample`` is True and ``temperature`` > 0 (a temperature
    of 0 means greedy). ``top_k`` = 0, ``top_p`` = 1, ``min_p`` = 0 and
    ``repetition_penalty`` = 1 switch those processors off. ``num_beams`` > 1 selects beam
    search, scored by ``sum(log p) / n_new ** length_penalty`` where ``n_new`` counts the
    generated tokens (end-of-sequence included). ``early_stopping`` ends a beam search as
    soon as ``num_beams`` hypotheses have finished; otherwise when no running beam can still
    beat the worst finished one at its current length. ``stop_strings`` need a tokenizer.
    ``bos_token_id`` starts an empty prompt (and the target of an encoder-decoder);
    ``pad_token_id`` fills rows that have finished (default: the first EOS id, else 0).
    ``traced_step`` runs the one-token steps of a decoder-only model through a recorded
    step (``attnlab.generation.traced``): True, False, or None for "when at least
    ``TRACE_MIN_TOKENS`` new tokens are asked for" (recording costs about as much as tens of
    eager steps). Beam search always steps eagerly. ``compiled_step``: where those steps
    run at batch 1 without padding and a compiled step was made for the model on this
    machine (``attnlab compile``, ``attnlab.generation.compiled``), run them through it
    (faster; equal to the recorded step to rounding, not bit for bit).
    """

    max_new_tokens: int = 64
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool = False
    eos_token_ids: list[int] = field(default_factory=list)
    stop_strings: list[str] = field(default_factory=list)
    seed: int | None = None
    bos_token_id: int | None = None
    pad_token_id: int | None = None
    traced_step: bool | None = None
    compiled_step: bool = True

    def __post_init__(self) -> None:
        if not _is_int(self.max_new_tokens) or self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={self.max_new_tokens!r} must be a positive integer")
        if not isinstance(self.do_sample, bool):
            raise ValueError(f"do_sample={self.do_sample!r} must be True or False")
        if not isinstance(self.temperature, (int, float)) or not self.temperature >= 0:
            raise ValueError(f"temperature={self.temperature!r} must be >= 0 (0 means greedy)")
        if not _is_int(self.top_k) or self.top_k < 0:
            raise ValueError(f"top_k={self.top_k!r} must be an integer >= 0 (0 switches it off)")
        if not isinstance(self.top_p, (int, float)) or not 0 < self.top_p <= 1:
            raise ValueError(f"top_p={self.top_p!r} must lie in (0, 1]")
        if not isinstance(self.min_p, (int, float)) or not 0 <= self.min_p <= 1:
            raise ValueError(f"min_p={self.min_p!r} must lie in [0, 1]")
        if not isinstance(self.repetition_penalty, (int, float)) or not (
            self.repetition_penalty > 0
        ):
            raise ValueError(f"repetition_penalty={self.repetition_penalty!r} must be > 0")
        if not _is_int(self.num_beams) or self.num_beams < 1:
            raise ValueError(f"num_beams={self.num_beams!r} must be an integer >= 1")
        if self.num_beams > 1 and self.sampling:
            raise ValueError(
                f"num_beams={self.num_beams} cannot be combined with sampling; "
                "set do_sample=False (or temperature=0) for beam search"
            )
        if self.num_beams > 1 and self.stop_strings:
            raise ValueError(f"stop_strings need num_beams=1, got num_beams={self.num_beams}")
        if not isinstance(self.length_penalty, (int, float)):
            raise ValueError(f"length_penalty={self.length_penalty!r} must be a number")
        if not isinstance(self.early_stopping, bool):
            raise ValueError(f"early_stopping={self.early_stopping!r} must be True or False")
        if _is_int(self.eos_token_ids):
            self.eos_token_ids = [self.eos_token_ids]  # type: ignore[list-item]
        self.eos_token_ids = list(self.eos_token_ids)
        if not all(_is_int(i) and i >= 0 for i in self.eos_token_ids):
            raise ValueError(f"eos_token_ids={self.eos_token_ids!r} must be token ids >= 0")
        if isinstance(self.stop_strings, str):
            self.stop_strings = [self.stop_strings]
        self.stop_strings = list(self.stop_strings)
        if not all(isinstance(s, str) and s for s in self.stop_strings):
            raise ValueError(f"stop_strings={self.stop_strings!r} must be non-empty strings")
        if self.traced_step not in (None, True, False):
            raise ValueError(f"traced_step={self.traced_step!r} must be True, False or None")
        if not isinstance(self.compiled_step, bool):
            raise ValueError(f"compiled_step={self.compiled_step!r} must be True or False")
        for name in ("seed", "bos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None and (not _is_int(value) or value < 0):
                raise ValueError(f"{name}={value!r} must be None or an integer >= 0")

    @property
    def use_traced_step(self) -> bool:
        """Whether one-token steps (greedy or sampled, not beam search) are recorded."""
        if self.num_beams > 1 or self.traced_step is False:
            return False
        return self.traced_step is True or self.max_new_tokens >= TRACE_MIN_TOKENS

    @property
    def sampling(self) -> bool:
        """True when tokens are drawn at random (do_sample and temperature > 0)."""
        return self.do_sample and self.temperature > 0

    @property
    def pad_id(self) -> int:
        """The id written into rows that have finished."""
        if self.pad_token_id is not None:
            return self.pad_token_id
        return self.eos_token_ids[0] if self.eos_token_ids else 0
