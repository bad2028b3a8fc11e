"""Fault injection for crash tests: SIGKILL this process at a named point.

Inert unless ARCHIVAL_FAULT is set (tests and the chaos harness set it in a
subprocess). ``ARCHIVAL_FAULT=batch_before_commit:3`` kills the process the
third time it reaches that point, with kill -9: no cleanup, no rollback
handler, exactly like a power cut of the worker.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def checkpoint(name: str) -> None:
    spec = os.environ.get("ARCHIVAL_FAULT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
