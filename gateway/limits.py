"""Limits in layers: settings defaults, then the definition, then tighter overrides.

A per-message override can only tighten a limit, and a turn can never be
given more than what is left of its thread's budget.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gateway.backends import ResolvedLimits
from gateway.definitions import AgentSpec
from gateway.registry import ThreadRecord
from gateway.settings import Settings


def thread_budget(settings: Settings, spec: AgentSpec) -> tuple[float, int, int]:
    """``(spend_usd, tokens, turns)`` the thread may use in all."""
    b = spec.thread_budget
    return (
        b.spend_usd if b.spend_usd is not None else settings.thread_spend_usd,
        b.tokens if b.tokens is not None else settings.thread_tokens,
        b.turns if b.turns is not None else settings.thread_turns,
    )


def budget_exhausted(settings: Settings, spec: AgentSpec, thread: ThreadRecord) -> str | None:
    """Why the thread may not take another turn, or None."""
    spend, tokens, turns = thread_budget(settings, spec)
    used_tokens = thread.input_tokens + thread.output_tokens
    if thread.turn_count >= turns:
        return f"thread budget exhausted: {thread.turn_count} of {turns} turns used"
    if used_tokens >= tokens:
        return f"thread budget exhausted: {used_tokens} of {tokens} tokens used"
    if thread.cost_usd >= spend:
        return f"thread budget exhausted: ${thread.cost_usd:.4f} of ${spend:.2f} spent"
    return None


def resolve(
    settings: Settings,
    spec: AgentSpec,
    thread: ThreadRecord,
    overrides: Mapping[str, Any] | None = None,
) -> ResolvedLimits:
    lim = spec.limits
    turns = lim.turns if lim.turns is not None else settings.limit_turns
    tokens = lim.tokens if lim.tokens is not None else settings.limit_tokens
    spend = lim.spend_usd if lim.spend_usd is not None else settings.limit_spend_usd
    duration = lim.duration_s if lim.duration_s is not None else settings.limit_duration_s
    for key, value in (overrides or {}).items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if number <= 0:
            continue
        if key == "turns":
            turns = min(turns, int(number))
        elif key == "tokens":
            tokens = min(tokens, int(number))
        elif key == "spend_usd":
            spend = min(spend, number)
        elif key == "duration_s":
            duration = min(duration, number)
    budget_spend, budget_tokens, _ = thread_budget(settings, spec)
    spend = min(spend, max(budget_spend - thread.cost_usd, 0.0))
    tokens = min(tokens, max(budget_tokens - thread.input_tokens - thread.output_tokens, 0))
    return ResolvedLimits(turns=turns, tokens=tokens, spend_usd=spend, duration_s=duration)
