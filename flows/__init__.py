"""Prefect flows and deployments that run the DVC stages locally or on a GPU work pool."""

import os

# Without PREFECT_API_URL a local run starts Prefect's ephemeral API server in a subprocess and waits 20 s for it
# (Prefect's default); on a loaded 2-core machine that start-up took longer in 2 of 3 tries ("Timed out while
# attempting to connect to ephemeral Prefect API server"). Set before Prefect is imported; a value in the
# environment or in a Prefect profile still wins over this default.
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
