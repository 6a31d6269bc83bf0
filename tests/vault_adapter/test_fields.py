from __future__ import annotations

from vault_adapter import parse_note
from vault_adapter.fields import apply_fields

HUMAN = """---
# notes on this agent, kept by a person
tags: [agent/message]   # keep this tag
zeta: 1
custom:
  nested: [a, b]
quoted: "keep 'quotes' as written"

status: queued
---
The body stays *exactly* as it is.

---
Even a horizontal rule.
"""


def test_update_changes_only_named_fields_and_keeps_comments_order_and_body() -> None:
    out = apply_fields(HUMAN, {"status": "done", "reply": "[[Messages/r]]"})
    before_lines = HUMAN.splitlines()
    after_lines = out.splitlines()
    changed = [line for line in after_lines if line not in before_lines]
    assert changed == ["status: done", "reply: '[[Messages/r]]'"]
    assert [line for line in before_lines if line not in after_lines] == ["status: queued"]
    assert out.endswith(HUMAN.split("---\n", 2)[2])
    note = parse_note("n.md", out.encode(), 0.0)
    assert list(note.frontmatter) == ["tags", "zeta", "custom", "quoted", "status", "reply"]


def test_remove_drops_a_block_with_its_continuation_lines() -> None:
    out = apply_fields(HUMAN, {}, remove=["custom"])
    assert "nested" not in out
    assert "# notes on this agent" in out


def test_replacing_a_multiline_value_replaces_all_its_lines() -> None:
    out = apply_fields(HUMAN, {"custom": "flat"})
    note = parse_note("n.md", out.encode(), 0.0)
    assert note.frontmatter["custom"] == "flat"
    assert "nested" not in out


def test_note_without_frontmatter_gets_a_block_and_keeps_its_text() -> None:
    out = apply_fields("hello\n", {"status": "rejected"})
    assert out == "---\nstatus: rejected\n---\nhello\n"


def test_flow_mapping_frontmatter_falls_back_to_a_full_dump_with_same_values() -> None:
    out = apply_fields("---\n{a: 1, b: 2}\n---\nbody", {"a": 3})
    note = parse_note("n.md", out.encode(), 0.0)
    assert note.frontmatter == {"a": 3, "b": 2}
    assert note.body == "body"


def test_crlf_notes_stay_crlf() -> None:
    out = apply_fields("---\r\na: 1\r\n---\r\nbody\r\n", {"b": 2})
    assert out == "---\r\na: 1\r\nb: 2\r\n---\r\nbody\r\n"


def test_literal_block_with_blank_line_survives_an_edit_of_another_key() -> None:
    text = "---\ndesc: |\n  one\n\n  two\nstatus: x\n---\nb"
    out = apply_fields(text, {"status": "y"})
    assert out == "---\ndesc: |\n  one\n\n  two\nstatus: y\n---\nb"


def test_the_quick_rendering_writes_exactly_what_the_yaml_dumper_writes() -> None:
    from vault_adapter.fields import _render_simple
    from vault_adapter.note import dump_yaml

    values = [
        None, True, False, 0, 7, -3, 10**12, "queued", "done", "agent/message", "a-b_c",
        "yes", "No", "null", "on", "1", "1e5", "2026-11-21", "x: y", "", " pad", "[[a]]",
        ["agent/message"], ["a", "b"], ["yes"], [], [1], 1.5, {"a": 1}, "ünï",
    ]  # fmt: skip
    quick = 0
    for value in values:
        for key in ("status", "tags", "yes", "two words", "n"):
            rendered = _render_simple(key, value)
            if rendered is not None:
                quick += 1
                assert rendered + "\n" == dump_yaml({key: value}), (key, value)
    assert quick >= 20


def test_a_field_already_holding_the_value_is_left_as_written() -> None:
    text = "---\nstatus: 'done'  # by hand\ncount: 1\n---\nbody\n"
    assert apply_fields(text, {"status": "done"}) == text
    # 1.0 and True are not 1: those are changes.
    assert "count: 1.0" in apply_fields(text, {"count": 1.0})
    assert "count: true" in apply_fields(text, {"count": True})
