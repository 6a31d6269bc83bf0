"""Running a command confined: bubblewrap, a cleared environment, a killable process group.

This package knows nothing about notes or agents.
"""
