"""The errors of bad input: one line that names the field (in the API) or the flag (on the command line).

`UsageError` is what `imagegen.cli.main` turns into `imagegen CMD: error: MESSAGE` with exit code 2;
`InvalidField` is a UsageError that also knows which request fields are at fault, so that the API can
answer a 422 listing them and the CLI one line naming them.
"""

from __future__ import annotations


class UsageError(Exception):
    """Bad input, reported as the single line `PROG: error: MESSAGE` with exit code 2.

    `prog` is filled by the argument parser for its own errors; errors raised while a command runs
    leave it None and get the command's prog from `main`.
    """

    def __init__(self, message: str, prog: str | None = None) -> None:
        # argparse messages can span lines; the contract is one line on stderr
        self.message = " ".join(message.split())
        self.prog = prog
        super().__init__(self.message)


class InvalidField(UsageError):
    """A request field that cannot be used: `field` is its API name, `reason` what is wrong with it
    (without the name), the message the whole sentence in the caller's vocabulary. `more`: the other
    fields of the same request that cannot be used, so that one answer names them all."""

    def __init__(self, field: str, reason: str, message: str, more: tuple[InvalidField, ...] = ()) -> None:
        super().__init__("; ".join([message, *(str(m) for m in more)]))
        self.field = field
        self.reason = " ".join(reason.split())
        self.more = more

    @property
    def fields(self) -> list[tuple[str, str]]:
        """(field, reason) of every offending field, this one first."""
        return [(self.field, self.reason), *((m.field, m.reason) for m in self.more)]

    @classmethod
    def of(cls, problems: list[InvalidField]) -> InvalidField:
        """One error naming every problem of `problems` (not empty)."""
        first, *rest = problems
        return cls(first.field, first.reason, first.message, tuple(rest))
