"""One thin module per DVC stage: read the stage's params section, call `cgstvg`, write outputs atomically."""

import os
from collections.abc import Callable

from cgstvg.utils.atomic import WriteError
from cgstvg.utils.integrity import IntegrityError
from cgstvg.utils.params_schema import ParamsError

# Nothing is ever fetched from a model hub at run time; weights and tokenizers come from local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def run_stage(name: str, main: Callable[[], object]) -> None:
    """Run a stage's `main`; a params file that does not fit the schema, an input that does not verify, or an
    output that cannot be written (a full disk) ends the run with one line naming the file (`CGSTVG_DEBUG=1` shows
    the traceback instead)."""
    try:
        main()
    except (ParamsError, IntegrityError, WriteError) as err:
        if os.environ.get("CGSTVG_DEBUG"):
            raise
        raise SystemExit(f"{name}: {err}") from None
