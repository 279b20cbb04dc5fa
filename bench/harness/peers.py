"""The servers the HTTP benchmarks compare: ggserve and its two peers, started on loopback.

- ``ggserve``: ``python -m cli.main serve`` (continuous batching, ``n_slots`` sequences);
- ``llama_cpp.server``: llama-cpp-python's own server, one ``Llama`` behind a lock;
- ``llama-server``: llama.cpp's C++ server, built here from the ``vendor/llama.cpp`` tree of the
  same pinned llama-cpp-python sdist, so the three run the same kernels on the same model file.

Every server gets the same model, the same thread count and the same context per slot;
``bench.harness.server.running`` starts each of these specs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from bench.harness.server import ServerSpec, ServerStartError, ggserve

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
DEFAULT_CACHE = Path(os.environ.get("GGSERVE_BENCH_CACHE", Path.home() / ".cache" / "ggserve"))
# Options of the llama-server build (besides Release); the UI is off because its assets would
# come from a model hub, which this machine never contacts.
LLAMA_SERVER_CMAKE_FLAGS = (
    "-DLLAMA_BUILD_SERVER=ON",
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_OPENSSL=OFF",
    "-DLLAMA_BUILD_UI=OFF",
    "-DLLAMA_USE_PREBUILT_UI=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
)


class PeerError(ServerStartError):
    """A peer could not be built or started; the message says why and what to do."""


# --- building llama-server ------------------------------------------------------------------


def _run_logged(cmd: list[str], log_path: Path, what: str, cwd: Path | None = None) -> None:
    with log_path.open("ab") as log:
        log.write(f"\n$ {' '.join(cmd)}\n".encode())
        log.flush()
        code = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=cwd)
    if code != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-25:])
        raise PeerError(f"{what} failed (exit {code}); last lines of {log_path}:\n{tail}")


def _fetch_sdist(cache: Path, log_path: Path) -> Path:
    """Download the llama-cpp-python sdist by package name (pip) into ``cache``."""
    name = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    sdist = cache / name
    if not sdist.exists():
        _run_logged(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
                "-d",
                str(cache),
            ],
            log_path,
            "pip download of the llama-cpp-python sdist",
        )
    if not sdist.exists():
        raise PeerError(f"pip download finished but {sdist} is missing; see {log_path}")
    return sdist


def _extract_llama_cpp(sdist: Path, dest: Path) -> Path:
    """Extract only ``vendor/llama.cpp`` from the sdist; returns the source folder."""
    prefix = f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}/vendor/llama.cpp/"
    source = dest / prefix.rstrip("/")
    if (source / "CMakeLists.txt").exists():
        return source
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        if not members:
            raise PeerError(f"{sdist} has no {prefix} tree: not the sdist this bench expects")
        tar.extractall(dest, members=members, filter="data")
    return source


def build_llama_server(cache: Path = DEFAULT_CACHE) -> Path:
    """Return the path of ``llama-server``, building it once from the pinned source.

    The sdist of llama-cpp-python==0.3.36 is fetched with pip, its vendored llama.cpp is
    configured with :data:`LLAMA_SERVER_CMAKE_FLAGS` and only the ``llama-server`` target is
    built (about 5 minutes on 2 cores). Later calls find the binary and return at once.
    """
    work = cache / f"llama-server-{LLAMA_CPP_PYTHON_VERSION}"
    binary = work / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    work.mkdir(parents=True, exist_ok=True)
    log_path = work / "build.log"
    log_path.write_text("")
    print(
        f"building llama-server from llama-cpp-python {LLAMA_CPP_PYTHON_VERSION} (log: {log_path})"
    )
    for tool in ("cmake", "c++"):
        if not _which(tool):
            raise PeerError(f"'{tool}' is not installed; install it (apt-get install cmake g++)")
    source = _extract_llama_cpp(_fetch_sdist(work, log_path), work / "src")
    generator = ["-G", "Ninja"] if _which("ninja") else []
    _run_logged(
        [
            "cmake",
            "-S",
            str(source),
            "-B",
            str(work / "build"),
            *generator,
            "-DCMAKE_BUILD_TYPE=Release",
            *LLAMA_SERVER_CMAKE_FLAGS,
        ],
        log_path,
        "cmake configure of vendor/llama.cpp",
    )
    jobs = str(os.cpu_count() or 2)
    _run_logged(
        ["cmake", "--build", str(work / "build"), "--target", "llama-server", "-j", jobs],
        log_path,
        "cmake build of llama-server",
    )
    if not binary.exists():
        raise PeerError(f"the build succeeded but {binary} is missing; see {log_path}")
    return binary


def _which(tool: str) -> str | None:
    return shutil.which(tool)


# --- the servers compared -----------------------------------------------------------------


def ggserve_spec(
    model: Path, threads: int, n_slots: int, n_ctx: int, name: str = "ggserve"
) -> ServerSpec:
    """ggserve with ``n_slots`` parallel sequences of ``n_ctx`` tokens, auth off (loopback)."""
    return ggserve(
        {
            "GGSERVE_MODEL_PATH": str(model),
            "GGSERVE_N_SLOTS": str(n_slots),
            "GGSERVE_N_CTX": str(n_ctx),
            "GGSERVE_N_THREADS": str(threads),
            "GGSERVE_N_THREADS_BATCH": str(threads),
            "GGSERVE_AUTH_DISABLED": "true",
            "GGSERVE_LOG_LEVEL": "WARNING",
            "GGSERVE_MAX_QUEUE": "256",
        },
        name=name,
        settings={"n_slots": n_slots, "n_ctx_per_slot": n_ctx, "threads": threads},
    )


def llama_cpp_server_spec(
    model: Path, threads: int, n_ctx: int, *, interrupt_requests: bool = False
) -> ServerSpec:
    """llama-cpp-python's server; ``interrupt_requests=True`` is its own default."""
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(model),
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--n_ctx",
        str(n_ctx),
    ]
    if not interrupt_requests:
        command += ["--interrupt_requests", "False"]
    name = "llama_cpp.server" if not interrupt_requests else "llama_cpp.server (defaults)"
    return ServerSpec(
        name=name,
        command=command,
        ready_path="/v1/models",
        settings={
            "n_ctx": n_ctx,
            "threads": threads,
            "interrupt_requests": interrupt_requests,
        },
    )


def llama_server_spec(
    binary: Path, model: Path, threads: int, n_parallel: int, n_ctx: int
) -> ServerSpec:
    """llama.cpp's ``llama-server -np N`` with ``n_ctx`` tokens per slot."""
    return ServerSpec(
        name=f"llama-server -np {n_parallel}",
        command=[
            str(binary),
            "-m",
            str(model),
            "-t",
            str(threads),
            "-tb",
            str(threads),
            "-np",
            str(n_parallel),
            "-c",
            str(n_ctx * n_parallel),
            "--no-webui",
        ],
        ready_path="/health",
        settings={"n_parallel": n_parallel, "n_ctx_per_slot": n_ctx, "threads": threads},
    )
