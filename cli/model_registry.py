"""``ggserve models register|list|promote|rollback``: the model registry and its lineage.

``promote`` and ``rollback`` with ``--url`` ask a running server to load the version beside the
one serving and switch to it (``POST /admin/models/activate``); the server records the
promotion once the new model is up. Without ``--url`` they only move the registry's pointer,
which the server follows at its next start.
"""

from __future__ import annotations

import getpass
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from convert.manifest import sha256_file
from server.registry.lineage import lineage_for
from server.registry.store import ModelRegistry, ModelVersion, RegistryError

console = Console(stderr=True)
out = Console()

RegistryOption = typer.Option(
    Path("models/registry.json"),
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
    model: Path = typer.Argument(..., help="The GGUF to register."),
    name: str | None = typer.Option(None, help="Display name (default: the manifest's name)."),
    adapter: Path | None = typer.Option(
        None, help="Adapter folder it was trained into (default: the manifest's adapter path)."
    ),
    eval_report: Path | None = typer.Option(None, help="JSON written by 'ggserve eval --report'."),
    registry: Path = RegistryOption,
) -> None:
    """Add a GGUF as the next version, with its lineage (base, adapter, dataset, eval)."""
    if not model.is_file():
        raise _fail(f"{model} is not a file")
    with model.open("rb") as handle:
        if handle.read(4) != b"GGUF":
            raise _fail(f"{model} is not a GGUF file")
    try:
        lineage = lineage_for(model, adapter=adapter, eval_report=eval_report)
        if lineage.eval is not None and lineage.eval.get("passed") is False:
            raise RegistryError(f"{eval_report} says the eval gate failed; not registering")
        entry = ModelRegistry(registry).register(
            model, sha256_file(model), name=name or model.stem, lineage=lineage
        )
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    out.print(f"registered {entry.label} ({entry.name}, sha256 {entry.sha256[:12]}…) in {registry}")


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
    for column in ("", "version", "name", "sha256", "base", "adapter", "dataset", "eval"):
        table.add_column(column)
    table.add_column("promoted")
    for entry in state.versions:
        table.add_row(
            "●" if entry.version == state.active else "",
            entry.label,
            entry.name,
            entry.sha256[:12],
            _sha(entry.lineage.base),
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
        target = ModelRegistry(registry).rollback_target()
    except RegistryError as exc:
        raise _fail(str(exc)) from exc
    _switch(target.version, "rollback", registry, url, api_key, by)


def _switch(
    version: int, action: str, registry: Path, url: str | None, api_key: str | None, by: str | None
) -> None:
    if url is None:
        try:
            entry = ModelRegistry(registry).promote(version, by or getpass.getuser(), action)
        except RegistryError as exc:
            raise _fail(str(exc)) from exc
        out.print(
            f"{action}: {entry.label} is now active in {registry}; a running server switches "
            "with --url (or at its next start)"
        )
        return
    headers = {"X-API-KEY": api_key} if api_key else {}
    try:
        response = httpx.post(
            url.rstrip("/") + "/admin/models/activate",
            json={"version": version, "action": action},
            headers=headers,
            timeout=600,
        )
    except httpx.HTTPError as exc:
        raise _fail(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise _fail(f"the server refused ({response.status_code}): {message}")
    body = response.json()
    out.print(
        f"{action}: the server now serves {body['version']} ({body['model']}), loaded in "
        f"{body['load_s']} s; {body['previous']} drains and is freed"
    )


def _sha(part: dict[str, object] | None) -> str:
    return str(part.get("sha256", "?"))[:12] if part else "-"


def _eval(entry: ModelVersion) -> str:
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
