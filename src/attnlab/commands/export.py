"""attnlab export: write a model as a Hugging Face folder that transformers loads."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "write a model (folder, .gguf or bundled name) as a Hugging Face folder for transformers"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="a model folder, a .gguf file or a bundled name")
    parser.add_argument("output", help="the folder to write (config.json, model.safetensors)")
    parser.add_argument(
        "--force",
        action="store_true",
        help="write into OUTPUT even when it is not empty and not a Hugging Face model folder",
    )


def check_output(source: str, output: str | Path, force: bool = False) -> Path:
    """``output`` as a Path when export may write there: never the source folder, a folder
    inside it or a training run folder; without ``force`` only a new or empty folder, or one
    holding a Hugging Face export already (its ``config.json`` has ``model_type``)."""
    out = Path(output)
    src = Path(source)
    if src.is_dir():  # a .gguf file's folder may take the export beside it
        src_dir = src.resolve()
        resolved = out.resolve()
        if resolved == src_dir or src_dir in resolved.parents:
            raise ValueError(
                f"cannot export {source} into {output}: the output folder is the model's own "
                "folder or inside it; choose another folder"
            )
    if out.exists() and not out.is_dir():
        raise ValueError(f"{output} is a file, not a folder")
    if (out / "train_config.json").exists() or (out / "checkpoint.json").exists():
        raise ValueError(  # even with --force: its files are linked to its checkpoint
            f"{output} is a training run folder; export into another folder"
        )
    if force or not out.exists() or not any(out.iterdir()) or _is_hf_folder(out):
        return out
    raise ValueError(
        f"{output} is not empty and is not a Hugging Face model folder; choose another folder "
        "or pass --force to write into it"
    )


def _is_hf_folder(folder: Path) -> bool:
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(config, dict) and "model_type" in config


def _folder_chat_template(path: Path) -> str | None:
    """The chat template of a Hugging Face folder (``tokenizer_config.json``'s
    ``chat_template`` or ``chat_template.jinja``), if it has one."""
    from attnlab.filecheck import read_json_object

    if not path.is_dir():
        return None
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text(encoding="utf-8")
    if (path / "tokenizer_config.json").is_file():
        template = read_json_object(path / "tokenizer_config.json", "JSON").get("chat_template")
        return template if isinstance(template, str) else None
    return None


def run(args: argparse.Namespace) -> int:
    from attnlab.interop.hf import save_hf_model
    from attnlab.interop.pretrained import from_pretrained

    out = check_output(args.model, args.output, getattr(args, "force", False))
    loaded = from_pretrained(args.model)
    template = loaded.chat_template or _folder_chat_template(loaded.path)
    folder = save_hf_model(loaded.model, out, loaded.tokenizer, chat_template=template)
    print(f"wrote {folder} ({loaded.model.num_parameters():,} parameters)")
    return 0
