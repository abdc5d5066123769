import threading

from pipeline.data.workers import worker_start_method


def test_forkserver_only_when_other_threads_run() -> None:
    assert worker_start_method(0) is None
    stop = threading.Event()
    thread = threading.Thread(target=stop.wait)
    thread.start()
    try:
        assert worker_start_method(2) == "forkserver"  # fork would copy that thread's locks mid-use
        assert worker_start_method(0) is None
    finally:
        stop.set()
        thread.join()
    if threading.active_count() == 1:  # pytest plugins may keep threads of their own
        assert worker_start_method(2) is None
