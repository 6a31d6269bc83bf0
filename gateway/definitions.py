"""Agent definitions: notes tagged ``agent/definition`` validated into ``AgentSpec``.

The frontmatter is the agent's settings and the body its role prompt. A note
that does not validate becomes a :class:`DefinitionProblem` (path and one
line of why) instead of an agent; the catalogue keeps both so listings can
show broken agents next to working ones, and one bad note never stops the
others. Definitions are re-read whenever their note changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vault_adapter import Note, slug

DEFINITION_TAG = "agent/definition"
BACKENDS = ("claude", "echo", "scripted")

# Frontmatter keys the gateway stamps or people add that are not settings.
_NOT_SETTINGS = {"tags", "status", "error", "aliases", "cssclasses", "created", "updated"}


class Limits(BaseModel):
    """Per-turn limits; any left out fall back to the settings' defaults."""

    model_config = ConfigDict(extra="forbid")
    turns: int | None = Field(None, ge=1)
    tokens: int | None = Field(None, ge=1)
    spend_usd: float | None = Field(None, gt=0)
    duration_s: float | None = Field(None, gt=0)


class ThreadBudget(BaseModel):
    """What a whole thread may use across its turns."""

    model_config = ConfigDict(extra="forbid")
    spend_usd: float | None = Field(None, gt=0)
    tokens: int | None = Field(None, ge=1)
    turns: int | None = Field(None, ge=1)


class SandboxConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: Literal["bwrap", "none"] = "bwrap"
    network: Literal["open", "restricted"] = "open"
    egress: list[str] = Field(default_factory=list)
    mounts: list[str] = Field(default_factory=list)


class AgentSpec(BaseModel):
    """A validated agent definition."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    path: str
    role: str
    channels: list[str] = Field(default_factory=list)
    mode: Literal["single-threaded", "multi-threaded"] = "single-threaded"
    model: str | None = None
    backend: Literal["claude", "echo", "scripted"] = "claude"
    tools: list[str] | None = None
    permission_mode: str | None = None
    limits: Limits = Field(default_factory=Limits)
    thread_budget: ThreadBudget = Field(default_factory=ThreadBudget)
    sandbox: SandboxConfig = Field(default_factory=SandboxConfig)
    mcp_servers: dict[str, Any] = Field(default_factory=dict)
    enabled: bool = True
    script: dict[str, Any] = Field(default_factory=dict)
    """Only for the ``scripted`` test backend: what it should do."""

    @field_validator("name")
    @classmethod
    def _name_is_a_slug(cls, value: str) -> str:
        if not value or slug(value) != value:
            raise ValueError(f"name {value!r} may use only letters, digits, '-' and '_'")
        return value

    @field_validator("channels")
    @classmethod
    def _channels_are_slugs(cls, value: list[str]) -> list[str]:
        for channel in value:
            if not channel or slug(channel) != channel:
                raise ValueError(f"channel {channel!r} may use only letters, digits, '-' and '_'")
        return value

    @field_validator("tools", mode="before")
    @classmethod
    def _tools_from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [t.strip() for t in value.split(",") if t.strip()]
        return value

    @property
    def link(self) -> str:
        return f"[[{self.path.removesuffix('.md')}]]"


@dataclass(frozen=True, slots=True)
class DefinitionProblem:
    """A definition note that could not become an agent, and why, in one line."""

    path: str
    name: str
    error: str
    blocked: AgentSpec | None = None
    """A valid definition refused only because another agent holds its name or channel."""


def parse_definition(note: Note) -> AgentSpec | DefinitionProblem:
    """Validate one ``agent/definition`` note."""
    fm = note.frontmatter
    raw_name = fm.get("name")
    name = str(raw_name) if raw_name is not None else slug(note.stem)
    data: dict[str, Any] = {k: v for k, v in fm.items() if k not in _NOT_SETTINGS}
    data["name"] = name
    data["path"] = note.path
    data["role"] = note.body.strip()
    if isinstance(data.get("channels"), str):
        data["channels"] = [data["channels"]]
    if not data.get("channels"):
        data["channels"] = [name]
    if not data["role"]:
        return DefinitionProblem(note.path, name, "the role prompt (the note's body) is empty")
    try:
        return AgentSpec(**data)
    except ValidationError as exc:
        return DefinitionProblem(note.path, name, _one_line(exc))


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"])
    message = str(first["msg"]).removeprefix("Value error, ")
    more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
    return f"{where}: {message}{more}" if where else f"{message}{more}"


class Catalogue:
    """The agents currently defined, by name, by channel and by note path."""

    def __init__(self) -> None:
        self._by_path: dict[str, AgentSpec | DefinitionProblem] = {}

    def put(self, path: str, entry: AgentSpec | DefinitionProblem) -> AgentSpec | DefinitionProblem:
        """Add or replace the definition from ``path``; a clash becomes a problem."""
        if isinstance(entry, AgentSpec):
            clash = self._clash(entry)
            if clash:
                entry = DefinitionProblem(path, entry.name, clash, blocked=entry)
        self._by_path[path] = entry
        return entry

    def remove(self, path: str) -> AgentSpec | DefinitionProblem | None:
        return self._by_path.pop(path, None)

    def blocked(self) -> list[str]:
        """Paths of valid definitions refused only for a clash: worth another look
        when a definition goes away."""
        return [p.path for p in self.problems() if p.blocked is not None]

    def _clash(self, spec: AgentSpec) -> str | None:
        for other in self.agents():
            if other.path == spec.path:
                continue
            if other.name == spec.name:
                return f"name {spec.name!r} is already used by {other.path}"
            shared = set(other.channels) & set(spec.channels)
            if shared:
                return f"channel {sorted(shared)[0]!r} is already used by agent {other.name!r}"
        return None

    def agents(self) -> list[AgentSpec]:
        return [e for e in self._by_path.values() if isinstance(e, AgentSpec)]

    def problems(self) -> list[DefinitionProblem]:
        return [e for e in self._by_path.values() if isinstance(e, DefinitionProblem)]

    def entries(self) -> list[AgentSpec | DefinitionProblem]:
        return sorted(self._by_path.values(), key=lambda e: e.name)

    def by_name(self, name: str) -> AgentSpec | None:
        wanted = name.strip().casefold()
        for spec in self.agents():
            if spec.name.casefold() == wanted:
                return spec
        return None

    def by_channel(self, channel: str) -> AgentSpec | None:
        wanted = channel.strip().casefold()
        for spec in self.agents():
            if any(c.casefold() == wanted for c in spec.channels):
                return spec
        return None

    def problem_named(self, name: str) -> DefinitionProblem | None:
        wanted = name.strip().casefold()
        for problem in self.problems():
            if problem.name.casefold() == wanted:
                return problem
        return None
