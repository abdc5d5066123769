"""Prefect flows of the pipeline: ``distill-flow`` (flows/distill.py), ``teacher-inference``, the demo helpers."""
