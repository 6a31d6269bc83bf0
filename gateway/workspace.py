"""Per-thread workspaces: the only place a thread's turns can write.

``.vaultgate/sessions/<channel>/<leaf>/`` holds ``home/`` (HOME and
CLAUDE_CONFIG_DIR, where claude keeps the thread's session), ``work/`` (the
turn's working directory), ``system-prompt.txt``, ``.mcp.json`` (mode 0600: it
may hold server secrets), ``attachments/`` and ``tmp/``. The path is stable
across turns and restarts, because ``--resume`` finds a session by HOME and
working directory. Transcripts are kept outside the workspace, in
``.vaultgate/transcripts/``, where the agent cannot rewrite its own record.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vault_adapter import slug


@dataclass(frozen=True, slots=True)
class Workspace:
    root: Path
    transcript: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def config_dir(self) -> Path:
        return self.home / ".claude"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def attachments(self) -> Path:
        return self.root / "attachments"

    @property
    def system_prompt_file(self) -> Path:
        return self.root / "system-prompt.txt"

    @property
    def mcp_file(self) -> Path:
        return self.root / ".mcp.json"

    def session_exists(self, session_id: str) -> bool:
        """Whether claude has stored this session in the thread's home."""
        projects = self.config_dir / "projects"
        return any(projects.glob(f"*/{session_id}.jsonl")) if projects.is_dir() else False


def workspace_for(state_dir: Path, thread_id: str) -> Workspace:
    channel, _, leaf = thread_id.partition(":")
    # Both parts are slugs already; slug again so no id can name a path outside.
    root = state_dir / "sessions" / slug(channel) / slug(leaf)
    transcript = state_dir / "transcripts" / slug(channel) / f"{slug(leaf)}.jsonl"
    return Workspace(root=root, transcript=transcript)


def prepare(workspace: Workspace, system_prompt: str, mcp_servers: dict[str, Any]) -> None:
    """Create the workspace's folders and write this turn's prompt and MCP config."""
    for folder in (
        workspace.home,
        workspace.config_dir,
        workspace.work,
        workspace.tmp,
        workspace.attachments,
        workspace.transcript.parent,
    ):
        folder.mkdir(parents=True, exist_ok=True)
    workspace.root.chmod(0o700)
    _write(workspace.system_prompt_file, system_prompt, 0o600)
    _write(workspace.mcp_file, json.dumps({"mcpServers": mcp_servers}, indent=2), 0o600)


def _write(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)
