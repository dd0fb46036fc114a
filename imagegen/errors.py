"""The one error a command raises for bad input; `imagegen.cli.main` turns it into exit code 2."""

from __future__ import annotations


class UsageError(Exception):
    """Bad command-line input, reported as the single line `PROG: error: MESSAGE` with exit code 2.

    `prog` is filled by the argument parser for its own errors; errors raised while a command runs
    leave it None and get the command's prog from `main`.
    """

    def __init__(self, message: str, prog: str | None = None) -> None:
        # argparse messages can span lines; the contract is one line on stderr
        self.message = " ".join(message.split())
        self.prog = prog
        super().__init__(self.message)
