"""Errors a user can fix: the CLI prints their one-line message instead of a traceback."""


class UserError(Exception):
    """Base for config, data, teacher, model, lock and training pre-flight errors."""


class ExportError(UserError):
    """What cannot be exported (`distill export`), and what to run first."""


class BudgetReached(UserError):
    """generate.budget could not pay for what is still missing (pipeline/budget.py): the CLI
    exits 3, not 2: nothing was wrong, the run spent what it was given."""
