"""``ggserve adapters list|load|unload``: LoRA adapters over a running server's model, without
a restart (``/admin/adapters``). Only registry versions load: register the adapter GGUF first
(``ggserve models register ADAPTER.gguf --base BASE.gguf``)."""

from __future__ import annotations

from urllib.parse import quote

import typer
from rich.console import Console
from rich.table import Table

from cli.admin_client import KeyOption, UrlOption, call

app = typer.Typer(help="LoRA adapters served over the running model.", no_args_is_help=True)
out = Console()


@app.command("list")
def list_adapters(url: str | None = UrlOption, api_key: str | None = KeyOption) -> None:
    """The adapters requests may pick by 'model', their versions and roles."""
    table = Table("name", "version", "default", "rollout arm")
    for adapter in call("GET", "/admin/adapters", url, api_key):
        version = adapter["version"]
        table.add_row(
            adapter["name"],
            "-" if version is None else f"v{version}",
            "yes" if adapter["default"] else "",
            "yes" if adapter["rollout_arm"] else "",
        )
    out.print(table)


@app.command("load")
def load(
    version: int = typer.Argument(..., help="Registry version of the adapter."),
    name: str | None = typer.Option(None, help="Name requests pick it by [its registry name]."),
    scale: float | None = typer.Option(None, help="Strength, 0-4 [the registry's]."),
    url: str | None = UrlOption,
    api_key: str | None = KeyOption,
) -> None:
    """Load a registered adapter over the running model; requests pick it at once."""
    body: dict[str, object] = {"version": version}
    if name is not None:
        body["name"] = name
    if scale is not None:
        body["scale"] = scale
    loaded = call("POST", "/admin/adapters", url, api_key, json=body, timeout=300)
    out.print(
        f"adapter [bold]{loaded['name']}[/bold] (v{loaded['version']}, scale {loaded['scale']}) "
        f'loaded in {loaded["load_s"]} s; requests pick it with "model": "{loaded["name"]}"'
    )


@app.command("unload")
def unload(
    name: str = typer.Argument(..., help="The adapter's name."),
    url: str | None = UrlOption,
    api_key: str | None = KeyOption,
) -> None:
    """Stop offering an adapter; it is freed once the requests using it have ended."""
    call("DELETE", f"/admin/adapters/{quote(name, safe='')}", url, api_key, timeout=600)
    out.print(f"adapter {name} unloaded")
