"""Errors a user can act on: what is wrong, where, and how to fix it."""

from __future__ import annotations


class NearmetalError(Exception):
    """A problem the user can fix; the CLI prints it without a traceback."""

    exit_code = 1

    def __init__(self, message: str, fix: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\n  fix: {self.fix}"


class PlanError(NearmetalError):
    """A plan that cannot be run; carries one line per problem (file:line field: message)."""

    exit_code = 2

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class MissingToolError(NearmetalError):
    """A program a trial needs is not installed."""


class PrivilegeError(NearmetalError):
    """A layer needs a privilege (root, a writable cgroup) this process does not have."""
