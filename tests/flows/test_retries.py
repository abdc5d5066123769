"""The tasks' retry rule under Prefect's engine: a permanent error fails at once, a transient one is retried."""

from __future__ import annotations

import errno
from pathlib import Path

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


def test_a_missing_checkpoint_fails_the_flow_at_once_with_the_reason_in_its_logs(
    prefect_harness: None, flow_data: dict[str, Path], tmp_path: Path
) -> None:
    """What ``prefect flow-run logs <id>`` prints (the run's API logs) names the missing file, and the failing task
    ran once."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    from flows.distill import distill_flow
    from tests.flows.conftest import tiny_parameters

    missing = tmp_path / "no_such_teacher.pth"
    params = tiny_parameters(flow_data, tmp_path, teacher={"preset": "tiny_teacher_mpii", "checkpoint": str(missing)})
    state = distill_flow(**params, return_state=True)
    assert state.is_failed()
    run_id = state.state_details.flow_run_id
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])))
        task_runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    assert any(str(missing) in log.message for log in logs), [log.message for log in logs]
    failed = [t for t in task_runs if t.state is not None and t.state.is_failed()]
    assert failed and all(t.run_count == 1 for t in failed), [(t.name, t.run_count) for t in failed]
