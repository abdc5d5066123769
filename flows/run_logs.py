"""The pipeline's own log lines (epochs, metrics, reused work) in the Prefect run's logs."""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

PIPELINE_LOGGER = "pipeline"


def forward_pipeline_logs() -> None:
    """Send ``pipeline.*`` INFO records to the Prefect API, attributed to the task run that emits them.

    ``PREFECT_LOGGING_EXTRA_LOGGERS=pipeline`` does the same where a worker sets it; doing it here makes every
    worker show them (once: a second call adds no second handler). The stages log at INFO, below the root
    logger's default WARNING, hence the level. Records emitted outside any run (the same process calling the
    stages directly afterwards) are not sent: the API would have no run to file them under.
    """
    logger = logging.getLogger(PIPELINE_LOGGER)
    if logger.level == logging.NOTSET or logger.level > logging.INFO:
        logger.setLevel(logging.INFO)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        handler = APILogHandler()
        handler.addFilter(_in_a_run)
        logger.addHandler(handler)


def _in_a_run(_record: logging.LogRecord) -> bool:
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None
