from server.engine.threads import default_threads, physical_cores, resolve_threads


def test_auto_threads_leave_one_core_for_the_event_loop() -> None:
    assert default_threads() == max(1, physical_cores() - 1)
    assert resolve_threads(0, 0) == (default_threads(), default_threads())


def test_explicit_thread_counts_are_kept_and_batch_defaults_to_decode() -> None:
    assert resolve_threads(3, 0) == (3, 3)
    assert resolve_threads(2, 5) == (2, 5)
