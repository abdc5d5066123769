"""Prefect tasks: thin wrappers (policy in the decorator) over the plain functions of ``flows.stages``."""
