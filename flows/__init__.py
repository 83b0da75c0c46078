"""Prefect flows and deployments that run the DVC stages locally or on a GPU work pool."""
