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


def test_tqdm_monitor_thread_does_not_switch_to_forkserver() -> None:
    from tqdm import tqdm

    with tqdm(total=2, disable=True) as bar:  # starts tqdm's monitor thread, which outlives the bar
        bar.update(1)
    assert tqdm.monitor is not None and tqdm.monitor.is_alive()
    others = [t for t in threading.enumerate() if t not in (threading.main_thread(), tqdm.monitor)]
    if not others:  # pytest plugins may keep threads of their own
        assert worker_start_method(2) is None
