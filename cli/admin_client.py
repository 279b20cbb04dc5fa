"""One admin call to a running server for the CLI: the URL and key resolved as every client
command does (flags, then GGSERVE_*, then ``.env``), the server's error envelope turned into
a one-line message and exit code 1."""

from __future__ import annotations

from typing import Any

import httpx
import typer
from rich.console import Console

from cli.client_settings import resolve

console = Console(stderr=True)

UrlOption = typer.Option(
    None, help="Server URL (default: GGSERVE_URL, else GGSERVE_HOST:PORT, from env or .env)."
)
KeyOption = typer.Option(None, envvar="GGSERVE_API_KEY", help="An admin key [GGSERVE_API_KEY].")


def call(
    method: str,
    path: str,
    url: str | None,
    api_key: str | None,
    *,
    json: dict[str, Any] | None = None,
    timeout: float = 60.0,
) -> Any:
    """The JSON body of a 2xx answer; exits 1 with the server's message otherwise."""
    base, key = resolve(url, api_key)
    headers = {"X-API-KEY": key} if key else {}
    try:
        response = httpx.request(method, base + path, json=json, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        console.print(f"[red]error:[/red] cannot reach {base}: {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    except ValueError as exc:  # e.g. nan or inf in a number flag: not JSON
        console.print(f"[red]error:[/red] cannot send that request: {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    if response.is_success:
        return response.json()
    try:
        error = response.json()["error"]
        message = error["message"] + (f" (field: {error['param']})" if error.get("param") else "")
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    console.print(f"[red]error:[/red] {response.status_code}: {message}", soft_wrap=True)
    raise typer.Exit(1)
