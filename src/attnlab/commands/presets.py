"""attnlab presets: list the training presets, or print the values of one."""

from __future__ import annotations

import argparse

HELP = "list the training presets (one line each), or print the values of one"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "name", nargs="?", help="a preset to print (its TrainConfig values); none: list them all"
    )


def run(args: argparse.Namespace) -> int:
    import yaml

    from attnlab.presets import DEFAULT_PRESET, load_preset, preset_description, preset_names

    names = preset_names()
    if args.name is None:
        width = max(len(n) for n in names)
        for name in names:
            default = " (default)" if name == DEFAULT_PRESET else ""
            print(f"{name:<{width}}  {preset_description(name)}{default}")
        return 0
    if args.name not in names:
        raise ValueError(f"unknown preset {args.name!r}; presets: {', '.join(names)}")
    print(f"# {args.name}: {preset_description(args.name, width=10**6)}")
    print("# other keys: TrainConfig's defaults (attnlab train --help)")
    print(yaml.safe_dump(load_preset(args.name), sort_keys=False, allow_unicode=True), end="")
    return 0
