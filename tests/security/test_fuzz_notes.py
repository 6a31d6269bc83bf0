"""Property tests for the vault adapter's edges: note parsing, field edits, paths, slugs.

Each property states a promise from the adapter's docstrings and lets
hypothesis hunt for a counter-example: ``parse_note`` refuses bad bytes only
with ``NoteParseError`` naming the path; ``apply_fields`` changes exactly the
named fields and never the body; ``normalize``/``resolve_in`` never hand out
a path that leaves the vault; ``slug`` only emits ``[A-Za-z0-9_-]``.

The example budgets are small so the file runs in well under a minute on a
2-core CI machine. For a long hunt, raise every budget at once::

    VAULTGATE_FUZZ_EXAMPLES=2000 .venv/bin/python -m pytest tests/security -q --timeout 0

(``--hypothesis-seed=N`` replays a run; a failure also prints a
``@reproduce_failure`` blob.) What the fuzzers found is pinned by plain
regression tests at the end; a bug still open is an ``xfail(strict=True)``
test, which fails loudly once the bug is fixed so the marker goes.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from typing import Any

import pytest
import yaml
from hypothesis import assume, given
from hypothesis import strategies as st

from tests.security.conftest import fuzz
from vault_adapter import NoteParseError, VaultPathError, normalize, parse_note, slug
from vault_adapter.fields import _render_simple, apply_fields
from vault_adapter.note import DEFAULT_MAX_NOTE_BYTES, Note, dump_yaml, load_yaml, render_note
from vault_adapter.paths import resolve_in

REPO = Path(__file__).resolve().parents[2]
NOTE_PATHS = st.sampled_from(["Inbox/a.md", "Agents/x.md", "n.md"]) | st.text(
    min_size=1, max_size=30
)

# -- (a) parse_note refuses only with NoteParseError ---------------------------

YAMLISH_KEY_SAMPLES = [
    "tags", "status", "agent", "a", "b", "<<", "? x", "- x", "null", "1", "true", "''", '"q"',
    "&a k", "*a", "!!str k", "k:v", "[a]", "{a: 1}", "~", "%", "@", "`", "#",
]  # fmt: skip
YAMLISH_VALUE_SAMPLES = [
    "", "1", "-1.5", ".inf", ".nan", "0x1F", "0o17", "0b101", "1_000", "~", "null", "yes", "No",
    "2001-12-14", "2001-13-45", "2001-12-14t21:59:43.10-05:00", "12:30:45", "1e400",
    "[a, b]", "{a: 1}", "[", "{", "]", "}", "[a, {b: [c", "&a 1", "*a", "*nope", "&a [*a]",
    "!!binary aGk=", "!!binary xyz", "!!timestamp x", "!!int x", "!!float x", "!!bool x",
    "!!python/object:os.system x", "!!python/name:os.system", "!!set {a}", "!!omap [a: 1]",
    "!!pairs [a: 1]", "!!map x", "!!seq x", "!foo x", "!<tag:x> y", "|", "|-", ">+", "|9",
    "'unterminated", '"bad \\q escape"', '"\\ud800"', '"\\U0010FFFF"', '"\\x00"', "# c",
    "- item", "? key", ": v", "%YAML 1.2", "%TAG ! tag:x,", "\t", "---", "...", "'it''s'",
    "<<: *a", "[*a, *a, *a]", "{? [a]: 1}", "{[1]: 2}", "? - a\n: 1", "\u2028", "\x85",
]  # fmt: skip
YAMLISH_KEYS = st.sampled_from(YAMLISH_KEY_SAMPLES) | st.text(max_size=10)
YAMLISH_VALUES = st.sampled_from(YAMLISH_VALUE_SAMPLES) | st.text(max_size=20)
INDENTS = st.sampled_from(["", " ", "  ", "    ", "\t", " \t", "- ", "  - "])
SEPARATORS = st.sampled_from([": ", ":", " : ", "", ":\t", ": - ", ": |\n  ", ": >\n "])
YAMLISH_LINES = st.builds(
    "".join,
    st.tuples(
        INDENTS,
        YAMLISH_KEYS,
        SEPARATORS,
        YAMLISH_VALUES,
        st.sampled_from(["", " # c", "#c", " ", "\t"]),
    ),
)
DELIMITERS = st.sampled_from(
    ["---", "--- ", "---\t", "...", "----", "--", "--- a", "\ufeff---", " ---", "---#"]
)
NEWLINES = st.sampled_from(["\n", "\r\n", "\r", "\u2028", "\x85"])
# Flow nesting far deeper than any person writes; the crash-deep kind runs in a
# child process (test_frontmatter_nested_30000_deep_is_refused_not_a_crash).
NESTING = st.builds(
    lambda opener, depth, close: opener * depth + {"[": "]", "{": "}"}[opener] * close,
    st.sampled_from(["[", "{"]),
    st.integers(0, 300),
    st.integers(0, 300),
)


@st.composite
def yamlish_notes(draw: st.DrawFn) -> bytes:
    """Text that looks like a note with frontmatter, then damaged at the byte level."""
    newline = draw(NEWLINES | st.just("\n"))
    lines = draw(st.lists(YAMLISH_LINES | DELIMITERS | NESTING.map("a: ".__add__), max_size=12))
    opening = draw(st.sampled_from(["---", "---", "--- ", "\ufeff---", "", "---\r", " ---"]))
    closing = draw(st.sampled_from(["---", "...", "", "--- ", "---x"]))
    body = draw(st.text(max_size=60))
    text = newline.join([opening, *lines, closing]) + draw(NEWLINES) + body
    raw = text.encode("utf-8", "surrogatepass")
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(raw)))
        junk = draw(
            st.sampled_from(
                [b"\x00", b"\xff", b"\xed\xa0\x80", b"\xc0\x80", b"\xe2\x82", b"\xef\xbb\xbf"]
            )
            | st.binary(max_size=4)
        )
        raw = raw[:at] + junk + raw[at:]
    if draw(st.booleans()):
        raw = raw[: draw(st.integers(0, len(raw)))]
    return raw


@st.composite
def encodings(draw: st.DrawFn) -> bytes:
    """Unicode text in the wrong encoding, with BOMs of every kind."""
    text = draw(st.text(max_size=80))
    encoding = draw(st.sampled_from(["utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252"]))
    bom = draw(
        st.sampled_from([b"", b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff", b"\xef\xbb\xbf" * 2])
    )
    return bom + ("---\na: " + text + "\n---\n").encode(encoding, "replace")


NOTE_BYTES = st.one_of(st.binary(max_size=400), yamlish_notes(), encodings())


def check_parse(path: str, raw: bytes, max_bytes: int = DEFAULT_MAX_NOTE_BYTES) -> Note | None:
    """``parse_note``'s whole contract for one input; any other exception escapes."""
    try:
        note = parse_note(path, raw, 0.0, max_bytes=max_bytes)
    except NoteParseError as exc:
        assert exc.path == path
        assert str(exc).startswith(f"{path}: ") and exc.detail
        return None
    assert len(raw) <= max_bytes
    assert note.path == path
    assert all(isinstance(key, str) for key in note.frontmatter)
    assert raw.decode("utf-8-sig").endswith(note.body)
    assert all(isinstance(tag, str) and tag for tag in note.tags)
    return note


@fuzz(1000)
@given(path=NOTE_PATHS, raw=NOTE_BYTES)
def test_parse_note_raises_only_note_parse_error_naming_the_path(path: str, raw: bytes) -> None:
    check_parse(path, raw)


@fuzz(300)
@given(raw=NOTE_BYTES, slack=st.integers(-3, 3))
def test_the_size_cap_holds_at_every_boundary(raw: bytes, slack: int) -> None:
    cap = max(len(raw) + slack, 0)
    note = check_parse("n.md", raw, max_bytes=cap)
    if len(raw) > cap:
        assert note is None


@pytest.mark.parametrize("extra", [-1, 0, 1])
def test_the_default_size_cap_is_exact(extra: int) -> None:
    head = b"---\r\ntags: [agent/message]\r\n---\r\n"
    raw = head + b"x" * (DEFAULT_MAX_NOTE_BYTES - len(head) + extra)
    if extra > 0:
        with pytest.raises(NoteParseError, match="over the limit") as caught:
            parse_note("big.md", raw, 0.0)
        assert caught.value.path == "big.md"
    else:
        assert parse_note("big.md", raw, 0.0).tags == ("agent/message",)


# -- (b) apply_fields changes the named fields and nothing else -----------------

TRICKY_STRING_SAMPLES = [
    "---", "...", "--- x", "a\n---\nb", "'", '"', "''", 'a "b" c', "it's", "\n", "\r\n", "\r",
    "a\r\nb", " lead", "trail ", "line\n", "\n\nx\n\n", "# not a comment", "key: value",
    "- item", "[1]", "{a: 1}", "yes", "no", "on", "null", "~", "1", "1.0", "1e3", "0x10",
    "0o7", "2001-12-14", "12:30", ".inf", "&a", "*a", "!tag", "|", ">", "%", "@", "`",
    "\t", "\x85", "\u2028", "\ufeff", "\x00", "\x7f", "\u00e9", "\U0001f600", "a: b\n- c", "<<",
]  # fmt: skip
TRICKY_STRINGS = st.sampled_from(TRICKY_STRING_SAMPLES)
STRINGS = TRICKY_STRINGS | st.text(max_size=30)
KEYS = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True) | STRINGS
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=False),
    STRINGS,
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=10,
)
BODIES = st.lists(
    st.sampled_from(["---\n", "\n---\n", "...\n", "  indented\n", "\r\n", "\n", "---", "a: 1\n"])
    | st.text(max_size=40),
    max_size=4,
).map("".join)


def typed(value: Any) -> Any:
    """A comparable form that tells ``True`` from ``1`` and ``1`` from ``1.0``."""
    if isinstance(value, dict):
        return ("dict", [(k, typed(v)) for k, v in value.items()])
    if isinstance(value, list):
        return ("list", [typed(v) for v in value])
    return (type(value).__name__, value)


def human_frontmatter(draw: st.DrawFn, data: dict[str, Any]) -> str:
    """Frontmatter as a person might lay it out: mixed styles, comments, blank lines."""
    chunks = []
    for key, value in data.items():
        chunk = yaml.safe_dump(
            {key: value},
            default_flow_style=draw(st.sampled_from([False, True, None])),
            default_style=draw(st.sampled_from([None, None, "'", '"'])),
            indent=draw(st.sampled_from([2, 4])),
            width=draw(st.sampled_from([20, 80, 1 << 30])),
            allow_unicode=draw(st.booleans()),
            sort_keys=False,
        )
        if chunk.count("\n") == 1 and draw(st.booleans()):
            chunk = chunk[:-1] + "  # kept by a person\n"
        chunks.append(chunk)
        chunks.extend(draw(st.lists(st.sampled_from(["\n", "# a comment\n", "#\n"]), max_size=2)))
    return "".join(chunks)


@st.composite
def notes(draw: st.DrawFn) -> bytes:
    data = draw(st.dictionaries(KEYS, VALUES, max_size=5))
    layout = draw(st.sampled_from(["dumped", "human", "flow", "shared", "empty", "none"]))
    if layout == "dumped":
        head = dump_yaml(data)
    elif layout == "shared":
        # One list under two keys: the dumper writes an anchor and an alias, which
        # tie the two blocks together.
        shared = draw(st.lists(SCALARS, min_size=1, max_size=3))
        head = yaml.safe_dump({**data, "first": shared, "again": shared}, sort_keys=False)
    elif layout == "human":
        head = human_frontmatter(draw, data)
    elif layout == "flow":
        head = yaml.safe_dump(data, default_flow_style=True, width=1 << 30, sort_keys=False)
    else:
        head = ""
    text = "" if layout == "none" else f"---\n{head}---\n"
    if draw(st.booleans()):
        text = text.replace("\n", "\r\n")
    bom = draw(st.sampled_from(["", "", "\ufeff"]))
    return (bom + text + draw(BODIES)).encode("utf-8")


@fuzz(500)
@given(raw=notes(), data=st.data())
def test_apply_fields_then_parse_gives_the_old_frontmatter_updated_and_the_same_body(
    raw: bytes, data: st.DataObject
) -> None:
    try:
        before = parse_note("n.md", raw, 0.0)
    except NoteParseError:
        assume(False)  # the generator made something that is not a note; try another
        raise
    old_keys = list(before.frontmatter)
    keys = st.sampled_from(old_keys) | KEYS if old_keys else KEYS
    fields = data.draw(st.dictionaries(keys, VALUES, max_size=4), label="fields")
    remove = data.draw(st.lists(keys, max_size=3), label="remove")
    text = raw.decode("utf-8-sig")  # as FolderVault.update_fields hands it over

    out = apply_fields(text, fields, remove, path="n.md")
    after = parse_note("n.md", out.encode("utf-8"), 0.0)

    expected = dict(before.frontmatter)
    for key in remove:
        if key not in fields:
            expected.pop(key, None)
    expected.update(fields)
    assert typed(after.frontmatter) == typed(expected)
    assert after.body == before.body
    assert out.endswith(before.body)
    if not fields and not set(remove) & set(before.frontmatter):
        assert out == text, "nothing to change, yet the note changed"


@fuzz(500)
@given(key=KEYS, value=SCALARS | st.lists(SCALARS, max_size=3))
def test_the_quick_rendering_is_the_dumpers_and_reads_back_as_the_value(
    key: str, value: Any
) -> None:
    line = _render_simple(key, value)
    if line is not None:
        assert line + "\n" == dump_yaml({key: value})
        assert typed(load_yaml(line + "\n", "n.md")) == typed({key: value})


# -- (c) paths never leave the vault --------------------------------------------

COMPONENT_SAMPLES = [
    "..", ".", "", "a", "b.md", "...", ". .", ".. ", " ..", "..\\..", "\\", "C:", "c:", "Z:\\",
    "\x00", "~", "\u00e9", "\uff0e\uff0e", "\u2025", "%2e%2e", "%2f", "link-out", "file-link.md",
    "up", "loop", "real", "alias", "deep", "ptr", "secret.md", "..\x00", "\u202e",
]  # fmt: skip
COMPONENTS = st.sampled_from(COMPONENT_SAMPLES) | st.text(max_size=5)
SEPARATORS_PATH = st.sampled_from(["/", "/", "//", "\\", "/./", "/../"])
PREFIXES = st.sampled_from(["", "", "/", "//", "C:", "c:/", "\\\\server\\share\\", "./", "~/"])


@st.composite
def vault_paths(draw: st.DrawFn) -> str:
    parts = draw(st.lists(st.tuples(COMPONENTS, SEPARATORS_PATH), min_size=1, max_size=6))
    return draw(PREFIXES) + "".join(c + s for c, s in parts)[: -len(parts[-1][1])]


PATHS = vault_paths() | st.text(max_size=20)


@fuzz(1000)
@given(rel=PATHS)
def test_normalize_refuses_or_returns_a_clean_relative_path(rel: str) -> None:
    try:
        clean = normalize(rel)
    except VaultPathError as exc:
        assert exc.path == rel
        return
    parts = clean.split("/")
    assert ".." not in parts and "." not in parts and "" not in parts
    assert not clean.startswith("/") and not PurePosixPath(clean).is_absolute()
    assert "\x00" not in clean and "\\" not in clean
    assert not re.match(r"[A-Za-z]:", clean)
    assert normalize(clean) == clean


@pytest.fixture(scope="module")
def trap_vault(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vault whose symlinks lead out of it in every way a symlink can."""
    base = tmp_path_factory.mktemp("paths").resolve()
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.md").write_text("---\nsecret: yes\n---\n")
    root = base / "vault"
    (root / "real").mkdir(parents=True)
    (root / "deep").mkdir()
    os.symlink(outside, root / "link-out")
    os.symlink(outside / "secret.md", root / "file-link.md")
    os.symlink("..", root / "up")
    os.symlink("loop", root / "loop")
    os.symlink("real", root / "alias")
    os.symlink("../../outside", root / "deep" / "ptr")
    os.symlink("../up", root / "real" / "up")
    return root


@fuzz(1000)
@given(rel=PATHS)
def test_resolve_in_never_returns_a_path_outside_the_root(trap_vault: Path, rel: str) -> None:
    try:
        found = resolve_in(trap_vault, rel)
    except VaultPathError:
        return
    real = Path(os.path.realpath(found))
    assert real == trap_vault or trap_vault in real.parents, f"{rel!r} -> {real}"
    assert found == trap_vault / normalize(rel)


@pytest.mark.parametrize(
    "rel", ["link-out/secret.md", "file-link.md", "up/outside/secret.md", "deep/ptr/x.md"]
)
def test_resolve_in_refuses_each_escaping_symlink(trap_vault: Path, rel: str) -> None:
    with pytest.raises(VaultPathError):
        resolve_in(trap_vault, rel)


# -- (d) slug ---------------------------------------------------------------------

SAFE = re.compile(r"[A-Za-z0-9_-]+")


@fuzz(500)
@given(text=st.text() | PATHS | st.text(st.characters(codec="ascii")))
def test_slug_only_emits_the_safe_alphabet_and_is_never_empty(text: str) -> None:
    out = slug(text)
    assert SAFE.fullmatch(out), repr(out)
    assert len(out) == max(len(text), 1)  # one character in, one character out
    assert slug(out) == out


# -- regressions: inputs the fuzzers found ---------------------------------------

# Each runs in a child process: the failure was a segfault, which would take
# pytest down with it.
_PARSE_IN_A_CHILD = """
import threading
from vault_adapter import NoteParseError, parse_note
threading.stack_size({stack})
raw = b"---\\na: " + {opening!r} * {depth} + {closing!r} * {depth} + b"\\n---\\nbody\\n"
def parse():
    try:
        parse_note("Inbox/deep.md", raw, 0.0)
    except NoteParseError:
        pass
    print("survived", len(raw))
thread = threading.Thread(target=parse)  # the gateway parses in worker threads too
thread.start()
thread.join()
"""


def _parse_in_a_child(opening: bytes, closing: bytes, depth: int, stack: int = 0) -> None:
    code = _PARSE_IN_A_CHILD.format(opening=opening, closing=closing, depth=depth, stack=stack)
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0 and "survived" in done.stdout, (
        f"exit {done.returncode} (-11 is SIGSEGV): {done.stderr[-500:]}"
    )


@pytest.mark.parametrize(
    ("opening", "closing"),
    [(b"[", b"]"), (b"{a: ", b"}"), (b"- ", b""), (b"[", b"")],
    ids=["flow-list", "flow-map", "block-list", "unclosed"],
)
def test_frontmatter_nested_30000_deep_is_refused_not_a_crash(
    opening: bytes, closing: bytes
) -> None:
    # Found by the parse fuzz: libyaml built nested nodes by recursing on the C
    # stack, and ~25,000 levels (a 50 KB note) killed the process with SIGSEGV.
    _parse_in_a_child(opening, closing, 30_000)


def test_deep_nesting_under_the_size_threshold_survives_a_small_thread_stack() -> None:
    _parse_in_a_child(b"[", b"]", 1_000, stack=256 * 1024)


@pytest.mark.parametrize("value", ["line one\nline two\n\n", "agent: x\nsubject: [oops\n\n"])
def test_a_value_ending_in_a_blank_line_keeps_the_body_intact(value: str) -> None:
    # Found by the apply_fields fuzz: such a value was dumped as a '|+' block plus
    # YAML's '...' document end, which closed the frontmatter early and pushed the
    # real '---' line into the body (the second value is how a broken inbox note's
    # frontmatter, quarantined into broken_frontmatter, often ends).
    note = "---\nstatus: queued\n---\nHello\n"
    edited = parse_note("n.md", apply_fields(note, {"error": value}).encode(), 0.0)
    rendered = parse_note("n.md", render_note({"error": value}, "Hello\n").encode(), 0.0)
    assert edited.frontmatter == {"status": "queued", "error": value}
    assert edited.body == rendered.body == "Hello\n"


@pytest.mark.parametrize("rel", ["./C:/x.md", ".//c:", "./Z:"])
def test_drive_letter_lookalikes_are_refused_however_they_are_spelled(rel: str) -> None:
    # Found by the normalize fuzz: './C:/x.md' normalized to 'C:/x.md', a path
    # normalize itself refuses, so the canonical form was not stable.
    with pytest.raises(VaultPathError):
        normalize(rel)
