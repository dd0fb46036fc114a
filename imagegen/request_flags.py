"""The command-line flags of a generate request, made from the declarations of `contract.request`:
`--steps` for `steps`, with the same meaning, range and default as the API's field."""

from __future__ import annotations

import argparse
from typing import Any

from contract.request import FIELD_TYPES, FLAGS, RANDOM, SETTINGS, Setting, bounds, number_text

_PARSERS = {"int": int, "float": float, "str": str}


def _help(name: str, s: Setting) -> str:
    lo, hi, hi_text = bounds(name)
    text = s.help
    if lo is not None:
        text += f", {number_text(lo)}..{hi_text}" if hi is not None else f", >= {number_text(lo)}"
    if s.default == RANDOM:
        return f"{text} (default: random, printed in the summary)"
    if s.from_card:
        return f"{text} (default: the model card's, else {s.default})"
    return f"{text} (default: {str(s.default).lower() if isinstance(s.default, bool) else s.default})"


def add_setting_arguments(p: argparse.ArgumentParser, *, local: bool) -> None:
    """A flag per request setting, each None when not given (so that the card's defaults apply).
    `local`: for `imagegen generate`, which checks choices itself and has no service-only settings;
    else for `imagegen submit`, which leaves every check to the server."""
    for name, s in SETTINGS.items():
        if local and not s.local:
            continue
        flag = FLAGS[name]
        if name == "class_label":
            p.add_argument(flag, required=True, metavar=s.metavar,
                           help=s.help.split(". ")[0].replace("or null", "or 'none'"))
        elif FIELD_TYPES[name] == "bool":
            p.add_argument(flag, action="store_true", default=None, help=_help(name, s))
        else:
            choices: Any = list(s.choices) if (local and s.choices) else None
            p.add_argument(flag, type=_PARSERS[FIELD_TYPES[name]], choices=choices, default=None,
                           metavar=None if choices else s.metavar, help=_help(name, s))


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings the flags gave (None for those left out), by request field."""
    return {name: getattr(args, name) for name in SETTINGS if hasattr(args, name)}
