"""Errors a user can fix: the CLI prints their one-line message instead of a traceback."""


class UserError(Exception):
    """Base for config, data, teacher, model, lock and training pre-flight errors."""


class ExportError(UserError):
    """What cannot be exported (`distill export`), and what to run first."""


class Stopped(UserError):
    """The run stopped before its end, keeping everything it was given, for a reason that is
    no fault of the input: the CLI exits 3, not 2, and a rerun continues."""


class BudgetReached(Stopped):
    """The run's budget could not pay for a teacher call still missing (pipeline/budget.py):
    the run spent what it was given."""


class EndpointStalled(Stopped):
    """An endpoint would keep a call waiting past serve.max_wait_s (a Retry-After of a day, a
    server that takes the connection and never answers): stopping costs nothing, waiting would
    cost the allocation (pipeline/client.py)."""
