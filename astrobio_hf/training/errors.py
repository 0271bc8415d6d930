"""How a run reports bad input: one line, the same from `astrobio-hf` and from `accelerate launch recipes/...`.

Errors of the user's making (a bad value, a missing file, a folder held by another run, a run whose steps keep
going non-finite) print `astrobio-hf: error: <message>` once (on the main process only, so a multi-process
launch does not repeat it) and exit with status 2; ASTROBIO_HF_TRACEBACK=1 shows the full traceback instead.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from .guards import NonFiniteLossError
from .lock import RunLockedError

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, NonFiniteLossError, RunLockedError)


def one_line(err: BaseException) -> str:
    return f"astrobio-hf: error: {' '.join(str(err).split())}"


def run_main(main: Callable[[], object]) -> None:
    """Entry point of `recipes/train_<family>.py`: run `main`, report a user error as one line, exit 2."""
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get("ASTROBIO_HF_TRACEBACK"):
            raise
        if os.environ.get("RANK", "0") == "0":
            print(one_line(err), file=sys.stderr, flush=True)
        sys.exit(2)
