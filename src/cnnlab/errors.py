"""The one exception type users see.

Every failure a user can cause (unknown name, missing file, corrupt data, bad value) is raised
as :class:`CnnlabError` with a one-line message that says what is wrong and what to do. The CLI
prints it without a traceback and exits non-zero; anything else is a bug and keeps its traceback.
"""


class CnnlabError(Exception):
    """A user-facing error with a one-line, actionable message."""

    exit_code = 1


class Interrupted(CnnlabError):
    """Ctrl-C, with what was kept and how to continue: exit status 130, as a shell gives
    a command stopped by SIGINT."""

    exit_code = 130


class Terminated(Interrupted):
    """A plain ``kill`` (SIGTERM), said like Ctrl-C: exit status 143."""

    exit_code = 143


def did_you_mean(name: str, known: list[str]) -> str:
    """``"did you mean 'lenet5'? "`` for a near miss of one of ``known`` (a case slip, a
    typo, the start of a longer name), else ``""``: put before the full list in an
    unknown-name error."""
    import difflib

    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered:
        return f"did you mean '{lowered[name.lower()]}'? "
    close = difflib.get_close_matches(name.lower(), list(lowered), n=2, cutoff=0.75)
    if not close and name:  # the start of a longer name: 'fashion', 'T-shirt', 'cifar'
        close = [k for k in lowered if k.startswith(name.lower())][:2]
    if not close:
        return ""
    return "did you mean " + " or ".join(f"'{lowered[c]}'" for c in close) + "? "
