"""Who did it, as text: the one way an actor is written in the audit trail and on the records it signs.

An actor is a user (its username), a process named by a string ("schedule",
"sweeper", a command run by hand: :func:`command_actor`) or nobody (the
system). The text is a snapshot: it survives the user's deletion, and it is
what four-eyes rules compare (a planner may not approve their own batch).
"""

from __future__ import annotations

import getpass
import os
import socket

SYSTEM = "system"


def actor_name(actor: object | None) -> str:
    """The actor as text: a user's username, a process's name, or "system" for none."""
    if hasattr(actor, "get_username"):
        return actor.get_username()
    return str(actor) if actor else SYSTEM


def command_actor(command: str) -> str:
    """The actor of a management command run by hand: ``osuser@host (command)``.

    The operating-system account and the machine are what an auditor can
    trace back to a person when no Django user is named.
    """
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        # No login name and no passwd entry (a container's bare uid).
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} ({command})"
