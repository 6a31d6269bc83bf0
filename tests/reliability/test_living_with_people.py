"""People editing the notes the gateway is writing, at the same time.

A gateway (in-process, over a real folder vault with fsync on, the real
registry and the ``scripted`` backend) answers a stream of messages for two
agents, one multi-threaded over five subjects and one single-threaded, while
a seeded script plays a busy person: it adds a line to a thread note's body
or its own frontmatter key (or both), adds keys to inbound notes while they
are queued or running, and, in the agent definitions, changes a key the
gateway does not use (``reviewed:``) and adds others. The person saves the
way careful editors do: the new text goes to a hidden temp file, and if the
note is still what they opened it is renamed over it; if not, they reopen it
and redo the edit (as Obsidian reloads a changed file).

Afterwards every line and key the person added is there (and the last
``reviewed:`` value), and nothing the gateway owns is lost: each inbound note
is stamped done with its id, thread, reply and times; each thread note shows
the registry's status and counters and one section per turn; registry and
vault agree (``support.audit``); no definition was marked broken.

**When the person saves.** Saves at random moments rarely land inside one of
the gateway's writes, so a soak of random saves finds a race only sometimes:
a flaky test. So the person also saves at the two moments that decide the
outcome, reached through seams, for a seeded random share of the gateway's
writes (``INJECT``):

- ``before_check``: after the gateway read the note and computed its new
  text, before it checks nothing changed (``FolderVault``'s
  ``before_replace`` hook). The gateway must notice and re-apply its fields
  to the person's version.
- ``during_write``: while the gateway writes and fsyncs its temp file, i.e.
  after that check and before the rename (``os.fsync``, patched for the test:
  the first fsync of a note write is its temp file's).
- ``free``: at random moments, at a person's pace.

Both variants pass: the gateway checks that a note is unchanged only once its
new version is written and synced, just before the rename, so a save in any
of these moments wins and the gateway's fields are applied to it again.

The other tests pin down single ways an edit can be lost: an in-place save
(truncate, then write: Obsidian, VS Code and most editors without an
atomic-save option) caught between its two steps by a stamp, and an editor
saving a stale buffer over a finished inbound note.

``VAULTGATE_RELIABILITY_SCALE=N`` sends N times the messages (CI: 100).
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from gateway.backends import ScriptedBackend
from gateway.engine import INDEX_FIELDS, Gateway
from gateway.settings import Settings
from tests.helpers.harness import Harness, definition, eventually, message
from tests.reliability.support import (
    audit,
    read_notes,
    scale,
    seed,
    summary,
    write_atomically,
)
from vault_adapter import FolderVault, WriteConflict, parse_note

MESSAGES = 100 * scale()
SUBJECTS = 5
INJECT = 0.3
AGENTS = {
    "people": definition("people", extra="script: {delay_s: 0.02}\nreviewed: nobody\n"),
    "solo": definition(
        "solo", mode="single-threaded", extra="script: {delay_s: 0.01}\nreviewed: nobody\n"
    ),
}


@dataclass
class Edit:
    path: str
    kind: str  # "line" | "key" | "reviewed"
    token: str
    moment: str  # "before_check" | "during_write" | "free"


@dataclass
class Person:
    """A seeded person editing notes, one save at a time; remembers every edit."""

    root: Path
    rng: random.Random
    edits: list[Edit] = field(default_factory=list)
    reviewed: dict[str, str] = field(default_factory=dict)
    redone: int = 0
    hands: threading.Lock = field(default_factory=threading.Lock)
    _n: int = 0

    def chance(self, p: float) -> bool:
        with self.hands:
            return self.rng.random() < p

    def edit(self, rel: str, moment: str) -> None:
        with self.hands:
            self._n += 1
            token = f"p{self._n:05d}"
            if rel.startswith("Threads/"):
                self._edit_thread(rel, token, moment)
            elif rel.startswith("Inbox/"):
                self._edit_inbound(rel, token, moment)
            elif rel.startswith("Agents/"):
                self._edit_definition(rel, token, moment)

    def _save(self, rel: str, change: Callable[[str], str]) -> bool:
        """Open, change, save if nobody wrote meanwhile (else reopen and redo)."""
        path = self.root / rel
        tmp = path.with_name(f".{path.name}.person.tmp")
        for _ in range(20):
            try:
                before = path.read_bytes()
            except FileNotFoundError:
                return False
            tmp.write_text(change(before.decode("utf-8")), encoding="utf-8")
            if path.read_bytes() != before:
                self.redone += 1
                continue
            os.replace(tmp, path)
            return True
        tmp.unlink(missing_ok=True)
        return False

    def _edit_thread(self, rel: str, token: str, moment: str) -> None:
        choice = self.rng.choice(("line", "key", "both"))
        kinds = ("line", "key") if choice == "both" else (choice,)

        def change(text: str) -> str:
            if "key" in kinds:
                text = _add_key(text, f"human_{token}", f"kept {token}")
            if "line" in kinds:
                text = text.rstrip("\n") + f"\n\nA note from the person: {token}\n"
            return text

        if self._save(rel, change):
            self.edits += [Edit(rel, kind, token, moment) for kind in kinds]

    def _edit_inbound(self, rel: str, token: str, moment: str) -> None:
        if self._save(rel, lambda text: _add_key(text, f"human_{token}", f"kept {token}")):
            self.edits.append(Edit(rel, "key", token, moment))

    def _edit_definition(self, rel: str, token: str, moment: str) -> None:
        def change(text: str) -> str:
            text = re.sub(r"(?m)^reviewed: .*$", f"reviewed: {token}", text, count=1)
            return _add_key(text, f"human_{token}", f"kept {token}")

        if self._save(rel, change):
            self.edits += [Edit(rel, "key", token, moment), Edit(rel, "reviewed", token, moment)]
            self.reviewed[rel] = token


def _add_key(text: str, key: str, value: str) -> str:
    """A new frontmatter line just before the closing ``---``."""
    close = text.index("\n---\n", 3)
    return f"{text[:close]}\n{key}: {value}{text[close:]}"


def _all_stamped(root: Path) -> bool:
    notes = read_notes(root, "Inbox").values()
    return all(n.get("id") and n.get("status") == "done" for n in notes)


def lost_edits(root: Path, person: Person) -> list[Edit]:
    lost = []
    for edit in person.edits:
        note = parse_note(edit.path, (root / edit.path).read_bytes(), 0.0)
        if edit.kind == "line":
            kept = f"A note from the person: {edit.token}" in note.body
        elif edit.kind == "key":
            kept = note.frontmatter.get(f"human_{edit.token}") == f"kept {edit.token}"
        else:
            kept = note.frontmatter.get("reviewed") == person.reviewed[edit.path]
            kept = kept or person.reviewed[edit.path] != edit.token  # only the last counts
        if not kept:
            lost.append(edit)
    return lost


class Seams:
    """The person's hands inside the gateway's writes (see the module docstring)."""

    def __init__(self, root: Path, person: Person, moments: tuple[str, ...]) -> None:
        self.root = root.resolve()
        self.person = person
        self.moments = moments
        self._retrying: set[str] = set()
        self._real_fsync = os.fsync

    @staticmethod
    def _watched(rel: str) -> bool:
        return rel.startswith(("Inbox/", "Threads/"))

    def before_replace(self, rel: str) -> None:
        if "before_check" not in self.moments or not self._watched(rel):
            return
        if rel in self._retrying:
            self._retrying.discard(rel)  # the gateway's second try after our save: let it be
            return
        if self.person.chance(INJECT):
            self._retrying.add(rel)
            self.person.edit(rel, "before_check")

    def fsync(self, fd: int) -> None:
        self._real_fsync(fd)
        try:
            path = Path(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return
        if not (path.name.startswith(".") and path.name.endswith(".tmp")):
            return
        if ".person." in path.name or not path.is_relative_to(self.root):
            return
        target = path.with_name(path.name[1:-4].rsplit(".", 1)[0])
        rel = target.relative_to(self.root).as_posix()
        if self._watched(rel) and self.person.chance(INJECT):
            self.person.edit(rel, "during_write")


FULL = ("before_check", "during_write", "free")


@pytest.mark.parametrize(
    "moments",
    [
        pytest.param(("before_check",), id="before-the-check"),
        pytest.param(FULL, id="any-moment"),
    ],
)
async def test_people_editing_alongside_the_gateway_lose_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moments: tuple[str, ...]
) -> None:
    run_seed = seed()
    rng = random.Random(run_seed)
    print(f"living-with-people seed {run_seed} ({MESSAGES} messages, moments {moments})")
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    for name, text in AGENTS.items():
        write_atomically(root / "Agents" / f"{name}.md", text)
    person = Person(root, rng)
    seams = Seams(root, person, moments)
    if "during_write" in moments:
        monkeypatch.setattr(os, "fsync", seams.fsync)
    settings = Settings(quiet_window_s=0.05, agent_wait_s=0.5, fsync=True, port=0)
    h = Harness(root=root, settings=settings, backend=ScriptedBackend())
    vault = FolderVault(
        root,
        index_fields=INDEX_FIELDS,
        quiet_window_s=settings.quiet_window_s,
        fsync=True,
        before_replace=seams.before_replace,
    )
    h.gateway = Gateway(vault, settings, backends={"scripted": h.backend})
    h.events = h.gateway.bus.subscribe()
    await h.gateway.start()
    started = time.monotonic()
    finished = asyncio.Event()

    def free_edit() -> None:
        roll = person.chance(0.8) if "free" in moments else False
        if not roll:
            person.edit(f"Agents/{rng.choice(sorted(AGENTS))}.md", "free")
            return
        notes = {**read_notes(root, "Threads"), **read_notes(root, "Inbox")}
        open_notes = [
            p for p, n in notes.items() if p.startswith("Threads/") or n.get("status") != "done"
        ]
        if open_notes:
            person.edit(rng.choice(sorted(open_notes)), "free")

    async def edit_freely() -> None:
        while not finished.is_set():
            await asyncio.to_thread(free_edit)
            await asyncio.sleep(rng.uniform(0.01, 0.05))  # the person's pace

    async def send() -> None:
        for i in range(MESSAGES):
            if i % 5 == 4:
                text = message("solo", f"solo message {i}")
            else:
                text = message("people", f"message {i}", subject=f"s{i % SUBJECTS}")
            write_atomically(root / "Inbox" / f"m{i:04d}.md", text)
            await asyncio.sleep(0.02)  # the scenario: messages arriving over time

    editor = asyncio.create_task(edit_freely())
    try:
        await asyncio.gather(send(), h.done(MESSAGES, timeout=120))
        finished.set()
        await editor
        # The person's last save may have landed over a stamp (their own save can
        # race ours): give the gateway its quiet window to put the stamps back.
        try:
            await eventually(lambda: _all_stamped(root), 15)
        except TimeoutError:
            unstamped = {
                path: note.frontmatter
                for path, note in read_notes(root, "Inbox").items()
                if not (note.get("id") and note.get("status") == "done")
            }
            raise AssertionError(
                f"seed {run_seed}: not stamped done 15 s after the last turn: {unstamped}"
            ) from None
    finally:
        finished.set()
        await editor
        await h.stop()
        monkeypatch.undo()

    lost = lost_edits(root, person)
    result = audit(root)
    broken = [p for p, n in read_notes(root, "Agents").items() if n.get("status") == "error"]
    made = Counter(e.moment for e in person.edits)
    summary(
        f"living_with_people[{'+'.join(moments)}]",
        seed=run_seed,
        messages_sent=MESSAGES,
        lost=MESSAGES - len(result.replies),
        duplicated=result.duplicated_replies,
        human_edits=len(person.edits),
        edits_lost=len(lost),
        **{f"edits_{m}": f"{sum(e.moment == m for e in lost)}/{made[m]} lost" for m in moments},
        gateway_fields_lost=len(result.problems),
        seconds=round(time.monotonic() - started, 1),
    )
    assert made["before_check"] > 0
    details = [f"{e.moment}: {e.path} {e.kind} {e.token}" for e in lost]
    assert not lost, f"seed {run_seed}: human edits lost:\n" + "\n".join(details[:30])
    assert not result.problems, f"seed {run_seed}:\n" + "\n".join(result.problems[:30])
    assert not broken, broken
    assert len(result.inbound) == MESSAGES and len(result.replies) == MESSAGES


async def test_a_save_while_the_gateway_writes_its_temp_file_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    vault = FolderVault(root, quiet_window_s=0.05, fsync=True)
    note = root / "Inbox" / "q.md"
    note.write_text(message("people", "What changed?"))
    real_fsync = os.fsync
    saves: list[str] = []

    def fsync_while_a_person_saves(fd: int) -> None:
        # The gateway's first fsync is of its finished temp file: the person saves then.
        real_fsync(fd)
        if not saves:
            saves.append("human_key")
            text = note.read_text().replace("sender: alice", "sender: alice\nhuman_key: kept")
            write_atomically(note, text)

    monkeypatch.setattr(os, "fsync", fsync_while_a_person_saves)
    await vault.update_fields("Inbox/q.md", {"status": "running"})
    monkeypatch.undo()
    after = parse_note("Inbox/q.md", note.read_bytes(), 0.0).frontmatter
    assert saves, "the person never saved"
    assert after.get("status") == "running"
    assert after.get("human_key") == "kept", "the person's save was overwritten"


async def test_stamp_during_an_in_place_save_keeps_the_save(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    vault = FolderVault(root, quiet_window_s=0.05)
    note = root / "Inbox" / "q.md"
    note.write_text(message("people", "What changed?"))
    saved = message("people", "What changed? (and one more line)").replace(
        "sender: alice", "sender: alice\nhuman_key: kept"
    )
    # The editor's handle stays open across the stamp on purpose: a save in two steps.
    with open(note, "w", encoding="utf-8") as editor:  # noqa: ASYNC230 (truncated...)
        # ...a stamp comes in: an emptied note is a save in progress, never stamped over;
        # the stamp gives up (the gateway tries it again later) and touches nothing...
        with pytest.raises(WriteConflict):
            await vault.update_fields("Inbox/q.md", {"status": "running"})
        editor.write(saved)  # ...and the save writes its bytes
    after = parse_note("Inbox/q.md", note.read_bytes(), 0.0)
    assert "one more line" in after.body
    assert after.frontmatter.get("human_key") == "kept"


async def test_a_stale_editor_save_gets_every_stamp_back(tmp_path: Path) -> None:
    root = tmp_path / "vault"
    (root / "Inbox").mkdir(parents=True)
    settings = Settings(quiet_window_s=0.05, agent_wait_s=0.5, fsync=False, port=0)
    h = Harness(root=root, settings=settings, backend=ScriptedBackend())
    h.write("Agents/people.md", AGENTS["people"])
    await h.start()
    try:
        h.backend.gate = asyncio.Event()
        h.write("Inbox/q.md", message("people", "What changed?", subject="acme"))
        await h.wait_for_file("Inbox/q.md", lambda fm: fm.get("status") == "running")
        buffer = (root / "Inbox" / "q.md").read_text()  # the person's editor opened it here
        h.backend.gate.set()
        await h.done(1)
        stamped = h.note("Inbox/q.md").frontmatter
        # ...and saves that buffer, with one new key, over the finished note.
        write_atomically(
            root / "Inbox" / "q.md", buffer.replace("sender: alice", "sender: alice\nmine: kept")
        )
        after = await h.wait_for_file("Inbox/q.md", lambda fm: fm.get("status") == "done")
    finally:
        await h.stop()
    assert after.frontmatter.get("mine") == "kept"
    for key in ("id", "status", "thread", "reply", "received_at", "finished_at"):
        assert after.frontmatter.get(key) == stamped[key], f"{key} was not put back"
