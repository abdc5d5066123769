"""The retry rule every task shares: retry what a second try can mend, fail at once on what it cannot."""

from __future__ import annotations

from typing import Any

PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError, ValueError, TypeError, KeyError,
)  # fmt: skip
"""A missing or unreadable file, a bad config or checkpoint (ConfigError, CheckpointError are ValueErrors): the
same input gives the same error, so a retry would only make the user wait for the reason."""


def retry_unless_permanent(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect's ``retry_condition_fn``: False for ``PERMANENT_ERRORS``, True for the rest (an interrupted worker,
    a full disk freed meanwhile, CUDA out of memory next to another job, a lost API connection)."""
    return not isinstance(state.data, PERMANENT_ERRORS)
