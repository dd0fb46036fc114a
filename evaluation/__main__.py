"""`python -m evaluation`: the evaluation commands, with the errors of `imagegen` (one line, exit 2
for bad input, 1 for a file or store problem)."""

from __future__ import annotations

import sys

from imagegen.cli import Command, main

PROG = "python -m evaluation"

COMMANDS: dict[str, Command] = {
    "evaluate": Command("evaluation.evaluate", "measure FD and accuracy of a generator (evaluation.md), as JSON"),
    "model-card": Command("evaluation.model_card", "render docs/model-card.md (tables, plots, samples) from a card"),
}
"""Every command, by name."""


def run(argv: list[str] | None = None) -> int:
    """Run `python -m evaluation ARGV` and return the exit code."""
    return main(argv, commands=COMMANDS, top=PROG,
                description="Measure a generator's quality and render its model card (from a checkout).")


if __name__ == "__main__":
    sys.exit(run())
