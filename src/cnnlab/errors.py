"""The one exception type users see.

Every failure a user can cause (unknown name, missing file, corrupt data, bad value) is raised
as :class:`CnnlabError` with a one-line message that says what is wrong and what to do. The CLI
prints it without a traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""


class CnnlabError(Exception):
    """A user-facing error with a one-line, actionable message."""
