"""``ggserve models register|list|promote|rollback``: thin commands over ``flywheel/register.py``,
``flywheel/promote.py`` and the registry in ``artifacts/registry.py``."""

from __future__ import annotations

import getpass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from artifacts.names import REGISTRY
from artifacts.registry import ModelRegistry, RegisteredVersion, RegistryError, RegistryState
from flywheel.promote import (
    Action,
    PromoteError,
    activate_on_server,
    rollback_target,
    switch_pointer,
)
from flywheel.register import register_model

console = Console(stderr=True)
out = Console()

RegistryOption = typer.Option(
    REGISTRY,
    "--registry",
    envvar="GGSERVE_REGISTRY_PATH",
    help="Registry file [GGSERVE_REGISTRY_PATH].",
)
UrlOption = typer.Option(
    None, envvar="GGSERVE_URL", help="Running server to switch now (POST /admin/models/activate)."
)
KeyOption = typer.Option(None, envvar="GGSERVE_API_KEY", help="An admin key for --url.")


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", soft_wrap=True)
    return typer.Exit(1)


def register(
    model: Path = typer.Argument(..., help="The GGUF to register: a model or a GGUF LoRA."),
    base: Path | None = typer.Option(
        None, help="For a GGUF LoRA adapter: the model GGUF it applies over (required then)."
    ),
    scale: float = typer.Option(1.0, help="For an adapter: its strength when applied."),
    name: str | None = typer.Option(None, help="Display name (default: the manifest's name)."),
    adapter: Path | None = typer.Option(
        None, help="Adapter folder it was trained into (default: the manifest's adapter path)."
    ),
    eval_report: Path | None = typer.Option(None, help="JSON written by 'ggserve eval --report'."),
    registry: Path = RegistryOption,
) -> None:
    """Add a GGUF as the next version, with its lineage (base, adapter, dataset, eval); a GGUF
    LoRA becomes an adapter version over --base."""
    try:
        entry = register_model(
            registry,
            model,
            name=name,
            adapter=adapter,
            eval_report=eval_report,
            base=base,
            scale=scale,
        )
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    over = f" over base {entry.base_sha256[:12]}…" if entry.base_sha256 else ""
    out.print(
        f"registered {entry.label} ({entry.name}, {entry.kind}{over}, "
        f"sha256 {entry.sha256[:12]}…) in {registry}"
    )


def list_versions(registry: Path = RegistryOption) -> None:
    """Every version with its lineage; the active one is marked."""
    try:
        state = ModelRegistry(registry).read()
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    if not state.versions:
        out.print(f"no versions in {registry}; add one with 'ggserve models register MODEL.gguf'")
        return
    table = Table(title=f"model registry {registry}")
    for column in ("", "version", "name", "kind", "sha256", "base", "adapter", "dataset", "eval"):
        table.add_column(column)
    table.add_column("promoted")
    for entry in state.versions:
        table.add_row(
            "●" if entry.version == state.active else "",
            entry.label,
            entry.name,
            entry.kind,
            entry.sha256[:12],
            _base(entry, state),
            _sha(entry.lineage.adapter),
            _sha(entry.lineage.dataset),
            _eval(entry),
            f"{entry.promoted_at} by {entry.promoted_by}" if entry.promoted_at else "-",
        )
    out.print(table)


def promote(
    version: int = typer.Argument(..., help="Version number (as in 'models list')."),
    registry: Path = RegistryOption,
    url: str | None = UrlOption,
    api_key: str | None = KeyOption,
    by: str | None = typer.Option(None, help="Who promotes (default: your user name)."),
) -> None:
    """Put a version in service: now on a running server (--url), or at the next start."""
    _switch(version, "promote", registry, url, api_key, by)


def rollback(
    registry: Path = RegistryOption,
    url: str | None = UrlOption,
    api_key: str | None = KeyOption,
    by: str | None = typer.Option(None, help="Who rolls back (default: your user name)."),
) -> None:
    """Go back to the version that served before the active one."""
    try:
        target = rollback_target(registry)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    _switch(target.version, "rollback", registry, url, api_key, by)


def _switch(
    version: int,
    action: Action,
    registry: Path,
    url: str | None,
    api_key: str | None,
    by: str | None,
) -> None:
    try:
        entry = ModelRegistry(registry).read().get(version)
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    if entry.is_adapter:
        # Activation loads a version as the served model; an adapter GGUF is not one.
        raise _fail(
            f"{entry.label} is a LoRA adapter over base {entry.base_sha256 or '?'}, not a "
            f"model: it cannot replace the served model. Load it beside its base with "
            f"'ggserve adapters load {entry.version}' (or start with "
            f"GGSERVE_LORA_ADAPTERS={entry.name}={entry.model_path}:{entry.scale:g}); "
            "'ggserve rollout start' promotes it on live traffic"
        )
    if url is None:
        try:
            entry = switch_pointer(registry, version, by or getpass.getuser(), action)
        except RegistryError as exc:
            raise _fail(str(exc)) from exc
        out.print(
            f"{action}: {entry.label} is now active in {registry}; a running server switches "
            "with --url (or at its next start)"
        )
        return
    try:
        done = activate_on_server(url, version, action, api_key)
    except PromoteError as exc:
        raise _fail(str(exc)) from exc
    out.print(
        f"{action}: the server now serves {done.version} ({done.model}), loaded in "
        f"{done.load_s} s; {done.previous} drains and is freed"
    )


def _base(entry: RegisteredVersion, state: RegistryState) -> str:
    """An adapter's base as its version label when registered; else the base's sha prefix."""
    if entry.base_sha256 is None:
        return _sha(entry.lineage.base)
    base = next((v for v in state.versions if v.sha256 == entry.base_sha256), None)
    return base.label if base is not None else entry.base_sha256[:12]


def _sha(part: dict[str, object] | None) -> str:
    return str(part.get("sha256", "?"))[:12] if part else "-"


def _eval(entry: RegisteredVersion) -> str:
    result = entry.lineage.eval
    if not result:
        return "-"
    return "passed" if result.get("passed") else "FAILED"


def attach(app: typer.Typer) -> None:
    """Add the registry commands to the ``models`` sub-app."""
    app.command("register")(register)
    app.command("list")(list_versions)
    app.command("promote")(promote)
    app.command("rollback")(rollback)
