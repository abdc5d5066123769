"""How DataLoader worker processes are started, in one place for inference, training and evaluation."""

from __future__ import annotations

import multiprocessing
import threading

from tqdm import tqdm


def worker_start_method(num_workers: int) -> str | None:
    """The ``multiprocessing_context`` for a DataLoader with ``num_workers`` workers.

    ``None`` (the platform default, ``fork`` on Linux) while this process runs a single Python thread: fast, and
    plain scripts without a ``__main__`` guard keep working. ``forkserver`` once other threads run (a Prefect flow
    run has API and logging threads): ``fork`` copies their locks in whatever state they are, and such workers were
    seen to die at start. Forkserver workers start from a clean server and receive the dataset pickled (our datasets
    drop open HDF5 handles when pickled); the calling program then needs the usual ``__main__`` guard.

    tqdm's monitor thread does not count: any bar, even ``disable=True``, starts it and it lives on, so counting it
    made every later loader in the process pay forkserver's start (about 2 s); it only sleeps and reads bar
    counters under tqdm's lock, which the workers never take.
    """
    monitor = getattr(tqdm, "monitor", None)
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and t is not monitor]
    if num_workers <= 0 or not others:
        return None
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else None
