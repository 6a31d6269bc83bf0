"""One settings object: every setting's name, default and help in one place.

Values come from the defaults below, then ``vaultgate.toml`` in the vault
root (a flat table of ``name = value``, or the same under ``[vaultgate]``),
then ``VAULTGATE_<NAME>`` environment variables, each layer overriding the
last. ``docs/settings.md`` documents every field; a test keeps it complete.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.errors import SettingsError

SETTINGS_FILE = "vaultgate.toml"
ENV_PREFIX = "VAULTGATE_"


class Settings(BaseModel):
    """Every setting of vaultgate, with its default and what it does."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # Vault layout
    agents_folder: str = Field("Agents", description="Where agent definitions live.")
    subjects_folder: str = Field("Subjects", description="Where subject dossiers live.")
    inbox_folder: str = Field("Inbox", description="Where people drop inbound messages.")
    threads_folder: str = Field("Threads", description="Gateway-owned thread notes.")
    messages_folder: str = Field("Messages", description="Gateway-owned reply notes.")
    jobs_folder: str = Field("Jobs", description="Scheduled job notes.")
    state_dir: str = Field(
        ".vaultgate", description="State folder inside the vault (registry, workspaces)."
    )

    # Notes and watching
    max_note_bytes: int = Field(5 * 1024 * 1024, gt=0, description="Largest note read, bytes.")
    quiet_window_s: float = Field(
        0.5, ge=0, description="A note is read once it has not changed for this long."
    )
    watch_polling: bool = Field(
        False, description="Poll instead of inotify (synced or network folders)."
    )
    poll_interval_s: float = Field(1.0, gt=0, description="Polling interval when polling.")
    fsync: bool = Field(True, description="fsync every note write and its folder.")

    # A remote vault instead of the folder (see docs/remote-vault.md)
    vault_url: str = Field(
        "", description="URL of a parachute-vault server; empty: the vault is the local folder."
    )
    vault_name: str = Field("default", description="Which vault on that server.")
    vault_token: str = Field("", description="Bearer token for the vault server.")
    vault_poll_s: float = Field(2.0, gt=0, description="Seconds between polls of a remote vault.")

    # Turns
    max_concurrent_turns: int = Field(
        4, ge=1, description="Turn backends (claude processes) running at once, all threads."
    )
    agent_wait_s: float = Field(
        30.0, ge=0, description="How long a message for a not-yet-defined agent waits."
    )
    shutdown_grace_s: float = Field(
        20.0, ge=0, description="On stop, how long running turns may finish."
    )
    history_turns: int = Field(
        6, ge=0, description="Turns of history re-sent when a lost session restarts."
    )
    thread_note_turns: int = Field(
        50,
        ge=2,
        description="Most turns a thread note shows; past that, the older half move to an "
        "archive note beside it.",
    )

    # Default per-turn limits (a definition may tighten or loosen them)
    limit_turns: int = Field(20, ge=1, description="Default --max-turns per turn.")
    limit_tokens: int = Field(400_000, ge=1, description="Default token limit per turn.")
    limit_spend_usd: float = Field(1.0, gt=0, description="Default --max-budget-usd per turn.")
    limit_duration_s: float = Field(600.0, gt=0, description="Default wall-clock limit per turn.")

    # Default per-thread budget
    thread_spend_usd: float = Field(20.0, gt=0, description="Default spend budget per thread.")
    thread_tokens: int = Field(10_000_000, ge=1, description="Default token budget per thread.")
    thread_turns: int = Field(1000, ge=1, description="Default turn budget per thread.")

    # HTTP
    host: str = Field("127.0.0.1", description="Address the HTTP API binds.")
    port: int = Field(1941, ge=0, le=65535, description="Port the HTTP API binds (0: any free).")

    token: str = Field(
        "", description="Bearer token for the HTTP API; empty: generated into the state dir."
    )
    http_max_body_bytes: int = Field(
        1024 * 1024, gt=0, description="Largest HTTP request body accepted, bytes."
    )
    sse_heartbeat_s: float = Field(
        15.0, gt=0, description="Seconds between keep-alive comments on /api/events."
    )
    sse_buffer: int = Field(
        1000, ge=1, description="Events buffered per /api/events client before it is dropped."
    )

    # Backends
    claude_bin: str = Field("", description="Path of the claude CLI; empty: search PATH.")
    claude_max_retries: int = Field(
        2, ge=0, description="Retries the claude CLI makes itself for a failed API call."
    )
    turn_retries: int = Field(
        2, ge=0, description="Retries of a turn that failed on a transient API error."
    )
    retry_backoff_s: float = Field(
        2.0, ge=0, description="First wait before a turn retry; doubles each time."
    )

    @property
    def gateway_folders(self) -> tuple[str, ...]:
        return (self.threads_folder, self.messages_folder)


def _coerce(name: str, raw: str) -> Any:
    """Turn an environment string into the type the field wants (pydantic does the rest)."""
    annotation = Settings.model_fields[name].annotation
    if annotation is bool:
        lowered = raw.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off", ""):
            return False
    return raw


def load_settings(
    vault_root: Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Defaults, then ``vaultgate.toml``, then ``VAULTGATE_*``, then ``overrides``."""
    values: dict[str, Any] = {}
    if vault_root is not None:
        path = vault_root / SETTINGS_FILE
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise SettingsError(str(path), f"not valid TOML: {exc}") from exc
            table = data.get("vaultgate", data)
            if not isinstance(table, dict):
                raise SettingsError(str(path), "[vaultgate] must be a table")
            values.update({k: v for k, v in table.items() if k != "vaultgate"})
            source = str(path)
            _check_known(values, source)
    environ = os.environ if env is None else env
    for name in Settings.model_fields:
        key = ENV_PREFIX + name.upper()
        if key in environ:
            values[name] = _coerce(name, environ[key])
    values.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return Settings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise SettingsError(
            "settings", f"{where}: {first['msg']} (from {SETTINGS_FILE} or {ENV_PREFIX}*)"
        ) from exc


def _check_known(values: Mapping[str, Any], source: str) -> None:
    unknown = sorted(set(values) - set(Settings.model_fields))
    if unknown:
        raise SettingsError(source, f"unknown setting(s): {', '.join(unknown)}")
