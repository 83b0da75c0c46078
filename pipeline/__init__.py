"""One thin module per DVC stage: read the stage's params section, call `cgstvg`, write outputs atomically."""

import os

# Nothing is ever fetched from a model hub at run time; weights and tokenizers come from local directories.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
