"""``vaultgate check``: is this vault, and this machine, ready to run agents?

Each check gives ``ok``, ``warn`` or ``fail`` with a line a person can act on.
Definitions, dossiers and settings come from the vault; the claude CLI,
its credential and the bubblewrap sandbox from the machine. The command
exits non-zero when anything fails.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from gateway.backends.claude import CREDENTIALS, find_claude
from gateway.definitions import DEFINITION_TAG, AgentSpec, parse_definition
from gateway.errors import SettingsError
from gateway.settings import Settings, load_settings
from sandbox import preflight
from vault_adapter import FolderVault

Level = Literal["ok", "warn", "fail"]


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    detail: str


async def run_checks(root: Path, env: Mapping[str, str] | None = None) -> list[Check]:
    environ = os.environ if env is None else env
    checks: list[Check] = []
    try:
        settings = load_settings(root, env=environ)
        checks.append(Check("settings", "ok", "vaultgate.toml and VAULTGATE_* are valid"))
    except SettingsError as exc:
        checks.append(Check("settings", "fail", str(exc)))
        settings = Settings()
    specs = await _vault_checks(root, settings, checks)
    needs_claude = any(s.backend == "claude" for s in specs) or not specs
    needs_bwrap = any(s.backend == "claude" and s.sandbox.engine == "bwrap" for s in specs)
    checks += await _machine_checks(settings, environ, needs_claude, needs_bwrap or not specs)
    return checks


async def _vault_checks(root: Path, settings: Settings, checks: list[Check]) -> list[AgentSpec]:
    vault = FolderVault(root, max_note_bytes=settings.max_note_bytes)
    specs: list[AgentSpec] = []
    subjects = unreadable = 0
    async for item in vault.rescan():
        in_agents = item.path.startswith(settings.agents_folder + "/")
        if item.error is not None:
            if in_agents or item.path.startswith(settings.subjects_folder + "/"):
                checks.append(Check(f"note {item.path}", "fail", item.error.detail))
            unreadable += 1
            continue
        assert item.note is not None
        if item.path.startswith(settings.subjects_folder + "/"):
            subjects += 1
        if not item.note.has_tag(DEFINITION_TAG):
            continue
        entry = parse_definition(item.note)
        if isinstance(entry, AgentSpec):
            specs.append(entry)
            checks.append(
                Check(f"agent {entry.name}", "ok", f"{entry.backend} backend, {entry.mode}")
            )
        else:
            checks.append(Check(f"agent {entry.name}", "fail", f"{entry.path}: {entry.error}"))
    if not specs:
        checks.append(
            Check("agents", "warn", f"no agent definitions (notes tagged {DEFINITION_TAG})")
        )
    checks.append(Check("dossiers", "ok", f"{subjects} in {settings.subjects_folder}/"))
    if unreadable:
        checks.append(Check("notes", "warn", f"{unreadable} notes cannot be read as notes"))
    return specs


async def _machine_checks(
    settings: Settings, env: Mapping[str, str], needs_claude: bool, needs_bwrap: bool
) -> list[Check]:
    checks: list[Check] = []
    binary = find_claude(settings, env)
    miss: Level = "fail" if needs_claude else "warn"
    if binary is None:
        where = f"claude_bin = {settings.claude_bin}" if settings.claude_bin else "PATH"
        checks.append(
            Check(
                "claude",
                miss,
                f"the claude CLI is not usable: not found ({where}). Install it with "
                "'npm install -g @anthropic-ai/claude-code' or set claude_bin",
            )
        )
    else:
        version = await _version(binary)
        level: Level = "ok" if version else miss
        checks.append(Check("claude", level, f"{binary} ({version or 'does not run'})"))
    credential = next((name for name in CREDENTIALS if env.get(name)), None)
    checks.append(
        Check("credential", "ok", f"{credential} is set")
        if credential
        else Check(
            "credential",
            "warn" if not needs_claude else "fail",
            "neither ANTHROPIC_API_KEY nor CLAUDE_CODE_OAUTH_TOKEN is set; claude turns "
            "will fail (the echo backend needs none)",
        )
    )
    result = await preflight("bwrap", search_path=env.get("PATH"))
    if result.ok:
        checks.append(Check("bwrap", "ok", "the bubblewrap sandbox works here"))
        for warning in result.warnings:
            checks.append(Check("process limit", "warn", warning))
    else:
        checks.append(
            Check(
                "bwrap",
                "fail" if needs_bwrap else "warn",
                f"the sandbox is not usable: {result.detail}. Fix: {result.fix}",
            )
        )
    return checks


async def _version(binary: Path) -> str | None:
    try:
        proc = await asyncio.create_subprocess_exec(
            str(binary),
            "--version",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "DISABLE_AUTOUPDATER": "1"},
        )
    except OSError:
        return None
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return None
    return out.decode(errors="replace").strip() if proc.returncode == 0 else None
