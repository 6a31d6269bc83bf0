from __future__ import annotations

import pytest

from vault_adapter import NoteParseError, normalize_tags, parse_note, render_note


def test_parse_keeps_key_order_unknown_keys_and_exact_body() -> None:
    raw = b"---\nzeta: 1\ncustom: {a: [1, 2]}\nalpha: x\n---\n\n  indented first line\n"
    note = parse_note("Inbox/a.md", raw, 1.0)
    assert list(note.frontmatter) == ["zeta", "custom", "alpha"]
    assert note.frontmatter["custom"] == {"a": [1, 2]}
    assert note.body == "\n  indented first line\n"
    assert note.stem == "a"
    assert note.folder == "Inbox"


def test_note_without_frontmatter_is_all_body() -> None:
    note = parse_note("n.md", b"just text\n", 0.0)
    assert note.frontmatter == {}
    assert note.body == "just text\n"


def test_bom_and_crlf_are_accepted() -> None:
    note = parse_note("n.md", b"\xef\xbb\xbf---\r\nagent: a\r\n---\r\nhello\r\n", 0.0)
    assert note.frontmatter == {"agent": "a"}
    assert note.body == "hello\r\n"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["agent/definition", "#x"], ("agent/definition", "x")),
        ("#agent/message", ("agent/message",)),
        ("a, b c", ("a", "b", "c")),
        (["a", "a", None, " "], ("a",)),
        (None, ()),
        (7, ("7",)),
    ],
)
def test_tags_are_normalised(value: object, expected: tuple[str, ...]) -> None:
    assert normalize_tags(value) == expected


def test_has_tag_ignores_hash_and_case() -> None:
    note = parse_note("n.md", b"---\ntags: [Agent/Message]\n---\n", 0.0)
    assert note.has_tag("#agent/message")


def test_content_hash_changes_with_content() -> None:
    a = parse_note("n.md", b"one", 0.0)
    b = parse_note("n.md", b"two", 0.0)
    assert a.content_hash != b.content_hash
    assert a.content_hash == parse_note("m.md", b"one", 5.0).content_hash


BROKEN = {
    "broken yaml": (b"---\nagent: [unclosed\n---\nbody", "broken YAML"),
    "tab indentation": (b"---\na:\n\t- b\n---\n", "broken YAML"),
    "bad timestamp": (b"---\nwhen: 2026-13-45\n---\n", "broken YAML"),
    "list frontmatter": (b"---\n- a\n- b\n---\n", "not a list"),
    "scalar frontmatter": (b"---\njust a string\n---\n", "not a str"),
    "unclosed frontmatter": (b"---\nagent: a\nno end\n", "no closing"),
    "non utf-8": (b"---\nagent: caf\xe9\n---\n", "not UTF-8"),
    "binary": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "binary"),
    "over size cap": (b"x" * 2049, "over the limit of 2048"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_each_kind_of_broken_note_raises_note_parse_error_naming_the_path(case: str) -> None:
    raw, fragment = BROKEN[case]
    with pytest.raises(NoteParseError) as caught:
        parse_note("Inbox/broken.md", raw, 0.0, max_bytes=2048)
    assert caught.value.path == "Inbox/broken.md"
    assert fragment in caught.value.detail
    assert "Inbox/broken.md" in str(caught.value)


def test_render_then_parse_round_trips_values_and_order() -> None:
    fm = {
        "tags": ["agent/message"],
        "thread": "[[Threads/x/y]]",
        "multi": "line one\nline two\n",
        "limits": {"turns": 3},
        "empty": None,
    }
    note = parse_note("n.md", render_note(fm, "body\n").encode(), 0.0)
    assert note.frontmatter == fm
    assert list(note.frontmatter) == list(fm)
    assert note.body == "body\n"


def test_frontmatter_nested_tens_of_thousands_deep_is_refused_not_a_crash() -> None:
    for raw in (
        b"---\n" + b"- " * 30_000 + b"x\n---\nbody\n",
        b"---\na: " + b"[" * 30_000 + b"]" * 30_000 + b"\n---\n",
    ):
        with pytest.raises(NoteParseError, match="nests lists or mappings"):
            parse_note("Inbox/deep.md", raw, 0.0)


def test_a_value_ending_in_blank_lines_round_trips_without_moving_the_body() -> None:
    fm = {"error": "line one\nline two\n\n", "status": "queued"}
    note = parse_note("n.md", render_note(fm, "Hello\n").encode(), 0.0)
    assert note.frontmatter == fm and note.body == "Hello\n"


def test_a_remembered_frontmatter_is_handed_out_as_a_copy() -> None:
    from vault_adapter.note import load_yaml

    text = "tags: [a, b]\nnested: {x: [1]}\n"
    first = load_yaml(text, "n.md")
    first["tags"].append("changed")
    first["nested"]["x"].append(2)
    first["new"] = 1
    assert load_yaml(text, "n.md") == {"tags": ["a", "b"], "nested": {"x": [1]}}
