"""Start-up on a vault big enough to be indexed in worker processes: the notes the gateway
acts on are still found wherever they are, and every other note is indexed."""

from __future__ import annotations

import pytest

from gateway.backends import EchoBackend
from gateway.engine import INDEX_FIELDS, Gateway
from tests.helpers.harness import Harness, definition, message
from vault_adapter import FolderVault, parse_note

ORDINARY = 1200


def job(agent: str) -> str:
    return f"---\ntags: [agent/job]\nagent: {agent}\ncron: '0 9 * * *'\ntz: UTC\n---\nBrief.\n"


@pytest.mark.parametrize("processes", [0, 2], ids=["in-a-thread", "in-workers"])
async def test_start_finds_what_it_acts_on_anywhere_and_indexes_the_rest(
    harness: Harness, processes: int
) -> None:
    h = harness
    for i in range(ORDINARY):
        h.write(f"Area {i % 9}/n{i}.md", f"---\ntags: [note, t/{i % 4}]\n---\nnote {i}\n")
    h.write("Agents/a.md", definition("a"))
    h.write("Projects/b-agent.md", definition("b"))
    h.write("Agents/broken.md", "---\nname: [\n---\nrole\n")
    h.write("Inbox/q.md", message("a", "from the inbox"))
    h.write("Inbox/bad.md", "---\nagent: [\n---\nbroken yaml\n")
    h.write("Inbox/answered.md", "---\nagent: a\nstatus: Done\n---\nold\n")
    h.write("Inbox/outbound.md", "---\nagent: a\ndirection: outbound\n---\nnot for us\n")
    h.write(
        "Projects/ask.md",
        "---\ntags: ['#Agent/Message']\ndirection: inbound\nagent: b\n---\nfrom a project\n",
    )
    h.write("Projects/draft.md", "---\ntags: [agent/message]\nagent: b\n---\nno direction\n")
    h.write("Messages/a/reply.md", "---\ntags: [agent/message]\ndirection: inbound\n---\nours\n")
    h.write("Planning/j.md", job("a"))
    h.write("Threads/a/a--x.md", "---\ntags: [agent/thread]\nagent: a\ncontrol: paused\n---\n")
    vault = FolderVault(
        h.root,
        index_fields=INDEX_FIELDS,
        quiet_window_s=h.settings.quiet_window_s,
        fsync=False,
        scan_processes=processes,
        parallel_scan_from=ORDINARY,
    )
    h.gateway = gateway = Gateway(
        vault, h.settings, backends={"scripted": h.backend, "echo": EchoBackend()}
    )
    h.events = gateway.bus.subscribe()
    await gateway.start()

    done = await h.done(2)
    assert sorted(d["status"] for d in done) == ["done", "done"]
    assert h.note("Inbox/q.md").frontmatter["status"] == "done"
    assert h.note("Projects/ask.md").frontmatter["status"] == "done"
    for untouched in ("answered", "outbound"):
        assert "id" not in h.note(f"Inbox/{untouched}.md").frontmatter
    assert "status" not in h.note("Projects/draft.md").frontmatter
    assert "status" not in h.note("Messages/a/reply.md").frontmatter
    assert h.note("Inbox/bad.md").frontmatter["status"] == "rejected"
    assert sorted(spec.name for spec in gateway.catalogue.agents()) == ["a", "b"]
    assert [p.path for p in gateway.catalogue.problems()] == ["Agents/broken.md"]
    assert gateway.jobs is not None
    assert [j.path for j in gateway.jobs.jobs.values()] == ["Planning/j.md"]
    assert "a:a--x" in gateway._note_paused

    # Every ordinary note is in the index, exactly as reading it would put it there.
    assert len(await vault.find_by_tag("t/3")) == ORDINARY // 4
    for rel in ("Area 0/n0.md", "Area 5/n1103.md"):
        raw = (h.root / rel).read_bytes()
        assert vault.index.hash_of(rel) == parse_note(rel, raw, 0.0).content_hash
