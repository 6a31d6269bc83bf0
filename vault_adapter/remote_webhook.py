"""Paths of changed notes from a parachute-vault trigger webhook.

parachute-vault fires a configured trigger (``triggers:`` in its config.yaml)
after a note is created or updated and matches the trigger's ``when``
predicate. In the default ``send: json`` mode it POSTs

    {"trigger": "<name>", "event": "created" | "updated",
     "note": {"id", "content", "path", "tags", "metadata", "attachments",
              "createdAt", "updatedAt"},
     "context": {...}}          # only with include_context

and applies the JSON it gets back (``{}`` changes nothing) before stamping
``<name>_rendered_at`` into the note's metadata. :func:`parse_webhook` turns
such a body into the vault paths it names, so the gateway can poll at once
rather than at the next interval. A list of payloads or a bare note object is
accepted too; notes the gateway cannot address (no path, not Markdown, in a
dot-folder, unsafe path) are left out.
"""

from __future__ import annotations

import json
from typing import Any

from vault_adapter.errors import VaultError
from vault_adapter.remote_map import api_note, vault_path


def parse_webhook(body: bytes) -> list[str]:
    """Vault paths (``Inbox/q.md``) of the notes a trigger webhook body reports changed."""
    try:
        data: Any = json.loads(body)
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise VaultError(f"webhook body is not JSON: {exc}") from exc
    payloads = data if isinstance(data, list) else [data]
    paths: dict[str, None] = {}
    for payload in payloads:
        if not isinstance(payload, dict):
            kind = type(payload).__name__
            raise VaultError(f"webhook payload must be a JSON object, not a {kind}")
        note = payload.get("note", payload)
        rel = vault_path(api_note(note, "webhook"))
        if rel is not None:
            paths.setdefault(rel, None)
    return list(paths)
