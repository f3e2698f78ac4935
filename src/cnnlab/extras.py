"""Optional extras: features whose packages are not installed with cnnlab itself.

A feature that needs an extra (``pip install 'cnnlab[tensorboard]'``) calls
:func:`require_extra` before it does anything visible, so a missing package is one clear
line naming the extra to install, instead of an ``ImportError`` traceback halfway through a
run. The import happens only when the feature is used: the base install and ``import cnnlab``
never pay for an extra.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from cnnlab.errors import CnnlabError


def require_extra(module: str, extra: str, feature: str) -> ModuleType:
    """Import ``module`` for ``feature`` (e.g. ``"--tensorboard"``), or raise a one-line
    :class:`CnnlabError` naming ``pip install 'cnnlab[EXTRA]'``.

    A package that is installed but fails to import (a broken install, a missing dependency
    of its own) gets the same advice plus the import error, since reinstalling the extra is
    the usual fix and hiding the cause would make the other cases hard to diagnose.
    """
    try:
        return importlib.import_module(module)
    except ImportError as e:
        install = (f"pip install 'cnnlab[{extra}]' (in a source checkout: "
                   f"pip install -e '.[{extra}]')")
        # not installed: the module itself (or a parent package) is what could not be found
        missing = e.name is not None and (module == e.name or module.startswith(e.name + "."))
        if missing:
            raise CnnlabError(f"{feature} needs the {extra} extra: {install}") from None
        reason = (str(e).splitlines() or [type(e).__name__])[0]
        raise CnnlabError(f"{feature} needs the {extra} extra, and importing {module} failed "
                          f"({reason}); reinstall it: {install}") from e
