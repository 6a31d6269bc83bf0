"""After start-up the heap is frozen out of full collections (gateway.serve.settle_heap)."""

from __future__ import annotations

import subprocess
import sys

# In a process of its own: freezing the heap of the test process would keep every
# later test's garbage cycles that were alive at that moment.
SCRIPT = """
import gc, weakref
from gateway.serve import settle_heap

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a          # a cycle: only a collection frees it
gone = []
probe = weakref.ref(a, lambda _: gone.append(True))
settle_heap()
frozen = gc.get_freeze_count()
del a, b
gc.collect()
kept_while_frozen = not gone     # frozen objects are never collected
settle_heap()                    # takes back what it froze, frees what died since
print(frozen > 1000, kept_while_frozen, bool(gone), gc.get_freeze_count() > 1000)
"""


def test_settle_heap_freezes_what_lives_and_frees_what_died_since() -> None:
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.split() == ["True", "True", "True", "True"]
