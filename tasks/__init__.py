"""Prefect tasks: a few lines each, with explicit arguments, over the plain functions of ``pipeline``.

A task adds only policy (retries, no result caching, run names for the UI, logging and artifacts); the work it
names lives in ``pipeline`` and runs and tests without Prefect.
"""
