"""The gateway: where notes and agents meet.

It watches a vault for inbound messages, routes them to agents defined by
notes, runs each turn in the thread's sandboxed workspace and writes the
replies and thread records back as notes.
"""

__version__ = "0.1.0"
