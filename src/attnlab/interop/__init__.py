"""Load and save models: ``from_pretrained`` (the one loader every verb uses: run and model
folders, Hugging Face folders, GGUF files, bundled names), Hugging Face and GGUF formats
through one layout per architecture, chat templates and sentence embeddings."""

from attnlab.interop.decoding import prepare_for_decoding
from attnlab.interop.gguf_io import SUPPORTED_TYPES, GGUFContents, dequantize, load_gguf
from attnlab.interop.hf import load_hf_model, save_hf_model
from attnlab.interop.pretrained import BUNDLED, LoadedModel, from_pretrained, resolve_name

__all__ = [
    "BUNDLED",
    "GGUFContents",
    "LoadedModel",
    "SUPPORTED_TYPES",
    "dequantize",
    "from_pretrained",
    "load_gguf",
    "load_hf_model",
    "prepare_for_decoding",
    "resolve_name",
    "save_hf_model",
]
