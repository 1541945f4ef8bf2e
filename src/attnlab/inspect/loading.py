"""How the inspect CLI verbs turn a MODEL argument into a model and its tokenizer(s): the
one place to change when the loaders move."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from attnlab.models import TransformerModel
from attnlab.tokenizers import Tokenizer


@dataclass
class InspectModel:
    model: TransformerModel
    tokenizer: Tokenizer | None
    path: Path
    target_tokenizer: Tokenizer | None = None  # an encoder-decoder's own target vocabulary


def load_model(name_or_path: str) -> InspectModel:
    """The model behind a run folder, a model folder (attnlab or Hugging Face), a .gguf file
    or a bundled name (``minilm``, ``smollm2``), via ``attnlab.from_pretrained``;
    FileNotFoundError/ValueError naming it otherwise."""
    from attnlab import from_pretrained
    from attnlab.checkpoint import TARGET_TOKENIZER_FILE, load_tokenizer

    loaded = from_pretrained(name_or_path)
    target = getattr(loaded, "target_tokenizer", None)
    path = Path(loaded.path)
    if target is None and path.is_dir():  # from_pretrained keeps one tokenizer only
        target = load_tokenizer(path, TARGET_TOKENIZER_FILE)
    return InspectModel(loaded.model, loaded.tokenizer, path, target)
