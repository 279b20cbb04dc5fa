"""``ggserve keys``: make API keys. Only their sha256 ever goes into configuration."""

from __future__ import annotations

import re
import secrets
import sys
from pathlib import Path

import typer

from server.security.api_keys import PRIORITY_FIELD, hash_key, new_key

app = typer.Typer(help="API keys (stored only as sha256 hashes).")


@app.command("create")
def create(
    name: str | None = typer.Option(None, help="A human name shown in logs, e.g. 'mobile-app'."),
    key_id: str | None = typer.Option(None, "--id", help="Key id for logs/metrics (random)."),
    priority: int | None = typer.Option(
        None,
        min=-(2**31),
        max=2**31 - 1,
        help="Default request priority of this key (lower goes first; requests that set none).",
    ),
) -> None:
    """Print a new random key ONCE, and the line to add to the keys file or GGSERVE_API_KEYS."""
    key = new_key()
    key_id = key_id or "k" + secrets.token_hex(4)
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", key_id):
        raise typer.BadParameter("use letters, digits, '_', '.', '-' (max 64)", param_hint="--id")
    entry = f"{key_id}:{name}:{hash_key(key)}" if name else f"{key_id}:{hash_key(key)}"
    if priority is not None:
        entry += f":{PRIORITY_FIELD}{priority}"
    typer.echo(f"key (shown once, give it to the client): {key}")
    typer.echo(f"config line (keys file, or GGSERVE_API_KEYS comma list): {entry}")


@app.command("hash")
def hash_(
    key: str = typer.Argument(None, help="Key to hash; read from stdin when omitted."),
) -> None:
    """Print the sha256 of an existing key."""
    value = key if key is not None else sys.stdin.readline().strip()
    typer.echo(hash_key(value))


@app.command("init-env")
def init_env(path: Path = typer.Option(Path(".env"), help="The .env file to create.")) -> None:
    """Create a .env with a fresh development key (GGSERVE_API_KEY) if it has none yet."""
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if re.search(r"^GGSERVE_(API_KEYS?|API_KEYS_FILE|AUTH_DISABLED)=\S", text, flags=re.M):
        typer.echo(f"{path} already configures API keys; left unchanged")
        return
    key = new_key()
    with path.open("a", encoding="utf-8") as handle:
        handle.write(
            ("\n" if text and not text.endswith("\n") else "")
            + f"# development key made by 'ggserve keys init-env'\nGGSERVE_API_KEY={key}\n"
        )
    path.chmod(0o600)
    typer.echo(f"wrote a development API key to {path} (GGSERVE_API_KEY)")
