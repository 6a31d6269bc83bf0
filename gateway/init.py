"""``vaultgate init``: a vault a new user can start from, without overwriting anything."""

from __future__ import annotations

from pathlib import Path

from gateway.settings import SETTINGS_FILE, Settings

ECHO_AGENT = """---
tags: [agent/definition]
name: echo
mode: multi-threaded
backend: echo
---
You are the echo agent. You run offline and answer every message by showing
what you received. Use it to see vaultgate work before you set up Claude.
"""

CLAUDE_AGENT = """---
tags: [agent/definition]
name: assistant
mode: multi-threaded        # one thread (and Claude session) per subject
backend: claude
model: sonnet
tools: [Read, Write, Bash]
permission_mode: bypassPermissions
limits: {turns: 10, spend_usd: 0.50, duration_s: 600}
thread_budget: {spend_usd: 5.0}
enabled: false              # set to true once 'vaultgate check' is all good
---
You are a helpful assistant working from a notes vault. Answer the message
briefly and plainly; say what you do not know.
"""

WELCOME = """---
agent: echo
subject: getting-started
sender: you
---
Hello! Is anybody there?
"""

DOSSIER = """# Getting started

This is a dossier: the body of a note in Subjects/ is added to the system
prompt of every thread about that subject.
"""


def _settings_template() -> str:
    lines = [
        "# vaultgate settings: uncomment to change a default.",
        "# Environment variables VAULTGATE_<NAME> override this file.",
        "# Every setting is described in docs/settings.md.",
        "",
    ]
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, bool):
            shown = str(default).lower()
        elif isinstance(default, str):
            shown = f'"{default}"'
        else:
            shown = repr(default)
        lines.append(f"# {field.description}")
        lines.append(f"# {name} = {shown}")
    return "\n".join(lines) + "\n"


def init_vault(root: Path) -> list[str]:
    """Create what is missing; return one line per thing done or left alone."""
    settings = Settings()
    root.mkdir(parents=True, exist_ok=True)
    report: list[str] = []
    files = {
        f"{settings.agents_folder}/echo.md": ECHO_AGENT,
        f"{settings.agents_folder}/assistant.md": CLAUDE_AGENT,
        f"{settings.subjects_folder}/getting-started.md": DOSSIER,
        f"{settings.inbox_folder}/welcome.md": WELCOME,
        SETTINGS_FILE: _settings_template(),
    }
    for folder in (settings.agents_folder, settings.subjects_folder, settings.inbox_folder):
        (root / folder).mkdir(exist_ok=True)
    for rel, text in files.items():
        path = root / rel
        if path.exists():
            report.append(f"kept     {rel} (already there)")
            continue
        path.write_text(text, encoding="utf-8")
        report.append(f"created  {rel}")
    return report
