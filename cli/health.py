"""``ggserve health``: a readiness probe usable as a Docker HEALTHCHECK or Kubernetes exec probe."""

from __future__ import annotations

import httpx
import typer

from cli.client_settings import resolve

EXIT_READY, EXIT_NOT_READY, EXIT_UNREACHABLE = 0, 1, 2


def health(
    url: str | None = typer.Option(
        None, help="Server URL [default: GGSERVE_URL, else GGSERVE_HOST:PORT, from env or .env]."
    ),
    timeout: float = typer.Option(5.0, help="Seconds before giving up."),
) -> None:
    """Exit 0 when ready, 1 when up but not ready (loading or failed), 2 when unreachable."""
    url, _ = resolve(url, None)
    try:
        response = httpx.get(url.rstrip("/") + "/ready", timeout=timeout)
    except httpx.HTTPError as exc:
        typer.echo(f"unreachable: {url} ({exc.__class__.__name__})", err=True)
        raise typer.Exit(EXIT_UNREACHABLE) from exc
    try:
        body = response.json()
    except ValueError:
        body = {}
    if response.status_code == 200:
        typer.echo(f"ready: {body.get('model', '?')}")
        raise typer.Exit(EXIT_READY)
    typer.echo(
        f"not ready ({body.get('status', response.status_code)}): {body.get('reason')}", err=True
    )
    raise typer.Exit(EXIT_NOT_READY)
