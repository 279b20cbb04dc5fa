import os
import subprocess
import sys

from server.engine.threads import default_threads, physical_cores, resolve_threads


def test_auto_threads_use_every_physical_core() -> None:
    assert default_threads() == physical_cores()
    assert resolve_threads(0, 0) == (default_threads(), default_threads())


def test_explicit_thread_counts_are_kept_and_batch_defaults_to_decode() -> None:
    assert resolve_threads(3, 0) == (3, 3)
    assert resolve_threads(2, 5) == (2, 5)


def _spin_after_import(env: dict[str, str]) -> str:
    code = "import server.engine, os; print(os.environ.get('GOMP_SPINCOUNT', '-'))"
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    result = subprocess.run(
        [sys.executable, "-c", code],
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout.strip()


def test_openmp_spin_is_bounded_unless_the_operator_set_a_policy() -> None:
    assert _spin_after_import({}) == "100000"
    assert _spin_after_import({"GOMP_SPINCOUNT": "5"}) == "5"
    assert _spin_after_import({"OMP_WAIT_POLICY": "passive"}) == "-"
