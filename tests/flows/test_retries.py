"""The tasks' retry rule under Prefect's engine: a permanent error fails at once, a transient one is retried."""

from __future__ import annotations

import errno

import pytest
from prefect import flow, task

from pipeline.training.config import ConfigError
from tasks.policy import retry_unless_permanent


@pytest.mark.parametrize(
    ("error", "attempts"),
    [
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "annot/train.json"), 1),
        (ConfigError("optim.lr must be > 0"), 1),
        (OSError(errno.EIO, "Input/output error"), 3),
        (RuntimeError("CUDA out of memory"), 3),
    ],
    ids=["missing-file", "bad-config", "io-error", "cuda-oom"],
)
def test_permanent_errors_fail_at_once_and_transient_ones_are_retried(
    prefect_harness: None, error: Exception, attempts: int
) -> None:
    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retry_unless_permanent)
    def stage() -> None:
        calls.append(1)
        raise error

    @flow
    def pipeline() -> None:
        stage()

    with pytest.raises(type(error)):
        pipeline()
    assert len(calls) == attempts
