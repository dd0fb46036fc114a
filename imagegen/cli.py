"""`imagegen`: one parser, a registry of subcommands, and the error contract.

Each subcommand lives in its own module exposing `add_arguments(parser)` and `run(args) -> int`;
adding one is a module plus one line in `COMMANDS`. Only the chosen subcommand's flags are built,
because some (`train`'s, generated from `TrainConfig`) need torch, and `imagegen --help` should not.

Every input error, argparse's own included, is one line on stderr, `imagegen CMD: error: ...`,
with exit code 2: scripts and people read the same line, with no usage block around it.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import NoReturn

from contract.errors import UsageError
from model_store.errors import ModelStoreError

PROG = "imagegen"


@dataclass(frozen=True)
class Command:
    """A subcommand: the module that implements it and its one-line help."""

    module: str  # dotted path of a module with add_arguments(parser) and run(args) -> int
    help: str

    def load(self) -> ModuleType:
        """The implementing module (cheap: command modules import torch only inside functions)."""
        return importlib.import_module(self.module)


COMMANDS: dict[str, Command] = {
    "generate": Command("imagegen.generate", "sample images from a stored generator into PNG files"),
    "models": Command("imagegen.models_cmd", "list the models in the store"),
    "import-model": Command("imagegen.import_cmd", "import a local diffusers folder (UNet2DModel, DDPM/DDIM or DiT "
                                                   "pipeline) into the store"),
    "train": Command("imagegen.train_cmd", "train a generator or a guidance classifier and export it to the store"),
    "up": Command("imagegen.up_cmd", "run the whole service on this machine: Redis, the API and a worker"),
    "serve": Command("imagegen.serve_cmd", "run the HTTP API (settings from the environment: REDIS_URL...)"),
    "worker": Command("imagegen.worker_cmd", "run a generation worker that serves the Redis queue"),
    "submit": Command("imagegen.submit_cmd", "send a request to a running service and fetch its images"),
}
"""Every subcommand, by name, in the order `imagegen --help` lists them."""


class ArgumentParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise UsageError (one line, no usage block) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, prog=self.prog)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("imagegen")
    except PackageNotFoundError:
        return "unknown (not installed)"


DESCRIPTION = "Class-conditional diffusion: sample, train and manage models from the command line."


def build_parser(only: Sequence[str] | None = None, commands: dict[str, Command] = COMMANDS, prog: str = PROG,
                 description: str = DESCRIPTION) -> tuple[ArgumentParser, dict[str, ArgumentParser]]:
    """The top-level parser and each subcommand's parser; flags are added for the commands in
    `only` (all when None), the others list their help but take no flags."""
    parser = ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}",
                        help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                parser_class=ArgumentParser, help="one of the commands below")
    subparsers: dict[str, ArgumentParser] = {}
    for name, command in commands.items():
        # allow_abbrev off: a flag added later must not change what an abbreviation in a script means
        p = sub.add_parser(name, help=command.help, description=command.help, allow_abbrev=False)
        if only is None or name in only:
            command.load().add_arguments(p)
        subparsers[name] = p
    return parser, subparsers


def _chosen_command(argv: Sequence[str]) -> str | None:
    # the top level takes no option with a value, so the first bare word is the command
    return next((a for a in argv if not a.startswith("-")), None)


def _report(prog: str, message: str) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)


def main(argv: list[str] | None = None, commands: dict[str, Command] = COMMANDS, top: str = PROG,
         description: str = DESCRIPTION) -> int:
    """Run the command line `argv` (default: sys.argv[1:]) and return the exit code; `commands`,
    `top` and `description` make another program of the same shape (`python -m evaluation`)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    chosen = _chosen_command(argv)
    command = chosen if chosen in commands else None
    prog = f"{top} {command}" if command else top
    try:
        parser, subparsers = build_parser(only=[command] if command else [], commands=commands, prog=top,
                                          description=description)
        args, extra = parser.parse_known_args(argv)
        if extra:
            # argparse would blame the top-level parser; the flags belong to the subcommand
            subparsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
        return int(commands[args.command].load().run(args))
    except UsageError as e:
        _report(e.prog or prog, e.message)
        return 2
    except SystemExit as e:  # --help and --version exit through argparse
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except KeyboardInterrupt:
        _report(prog, "interrupted")
        return 130
    except (OSError, ModelStoreError) as e:
        # a file that cannot be read or written, or weights failing their sha256, is not a bug in
        # the command: say what, in one line
        _report(prog, str(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
