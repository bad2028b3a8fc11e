"""Graceful stop: SIGTERM (or an operator) asks workers to finish their batch and stop.

The engine consults :func:`stop_requested` between batches, never inside one,
so a stop never leaves a batch half done (a batch is one transaction, so
nothing would be lost anyway, but the half batch's work would be). When it is
true the engine starts no new batch, releases its lease and returns; the
django-q2 task re-enqueues its continuation so another worker (or this one
after a restart) carries on.

What sends SIGTERM to a worker process:
- ``kill -TERM <qcluster main pid>`` (the documented way to stop a cluster):
  the main process tells the sentinel to stop; workers are *not* signalled,
  they finish the task in hand (one time-boxed slice) and exit. The flag is
  not involved; the time box bounds the wait.
- a process-group or cgroup-wide SIGTERM (systemd's default ``KillMode``,
  ``docker stop`` of a container running qcluster under an init): every
  worker gets it. Without a handler a worker would die mid-batch (SIG_DFL);
  with :func:`install_sigterm_handler` it raises the flag, the engine stops
  at the next batch boundary, and :func:`exit_if_stopping` ends the process
  once the task has enqueued its continuation. A second SIGTERM kills at once.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

logger = logging.getLogger("archival.stopping")

_stop = threading.Event()
_state = {"reason": "", "installed_in_pid": None}


def request_stop(reason: object = "requested", *_ignored) -> None:
    """Ask every slice running in this process to stop at its next batch boundary.

    Also usable directly as a signal handler (called with signum, frame).
    """
    _state["reason"] = reason if isinstance(reason, str) else "signal"
    _stop.set()


def stop_requested() -> bool:
    """True once this process was asked to stop (SIGTERM or :func:`request_stop`)."""
    return _stop.is_set()


def stop_reason() -> str:
    return _state["reason"] if _stop.is_set() else ""


def clear() -> None:
    """Forget a stop request (a fresh process, or a test that raised the flag)."""
    _state["reason"] = ""
    _stop.clear()


def _on_sigterm(signum, frame) -> None:
    if _stop.is_set() and _state["reason"] == "SIGTERM":
        # Second SIGTERM: the operator means it. Restore the default and die
        # now; the batch in progress rolls back, its table resumes from the ledger.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    logger.warning("SIGTERM: finishing the current batch, then stopping (pid %s)", os.getpid())
    request_stop("SIGTERM")


def install_sigterm_handler() -> bool:
    """Turn SIGTERM into a graceful stop in this process, once. Returns True if installed now.

    Only the main thread may install signal handlers; elsewhere (a test
    server thread) this does nothing and returns False. A forked child
    inherits the parent's flag; the pid check makes each process install
    (and clear the inherited flag) exactly once.
    """
    pid = os.getpid()
    if _state["installed_in_pid"] == pid:
        return False
    if threading.current_thread() is not threading.main_thread():
        return False
    clear()
    signal.signal(signal.SIGTERM, _on_sigterm)
    _state["installed_in_pid"] = pid
    return True


def exit_if_stopping() -> None:
    """End this worker process after a slice when SIGTERM arrived during it.

    Called by a task only after its continuation is safely enqueued. The
    task's own q2 result is then never acknowledged: the ORM broker delivers
    it again after ``retry`` and it finds its ticket stale (a no-op); Redis
    has already dropped it. Either way nothing is lost or done twice.
    """
    if _stop.is_set() and _state["reason"] == "SIGTERM":
        logger.warning("worker %s exiting after SIGTERM", os.getpid())
        os._exit(0)
