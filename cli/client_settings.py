"""Where a client command finds the server and its key: flags, then GGSERVE_*, then ``.env``.

The server reads ``GGSERVE_*`` from the environment and from ``.env`` (pydantic-settings); the
client commands read the same variables the same way, so after ``make run`` (which writes a
development key into ``.env``) ``ggserve ask`` works without exporting anything.
"""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

_ANY_ADDRESS = {"0.0.0.0", "::", ""}  # a server bound to every interface is reached on loopback


class ClientSettings(BaseSettings):
    """The subset of the server's settings a client needs, read with the same rules."""

    model_config = SettingsConfigDict(
        env_prefix="GGSERVE_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        env_ignore_empty=True,
    )

    url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: SecretStr | None = None

    def server_url(self) -> str:
        """GGSERVE_URL, else the address the server was told to bind (GGSERVE_HOST/PORT)."""
        if self.url:
            return self.url.rstrip("/")
        host = "127.0.0.1" if self.host in _ANY_ADDRESS else self.host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"http://{host}:{self.port}"


def resolve(url: str | None, api_key: str | None) -> tuple[str, str | None]:
    """The flags when given, otherwise the environment / ``.env`` values."""
    settings = ClientSettings()
    key = api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    return (url.rstrip("/") if url else settings.server_url()), key
