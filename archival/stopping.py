"""Graceful stop: SIGTERM (or an operator) asks workers to finish their batch and stop.

The engine consults ``stop_requested()`` between batches, never inside one,
so a stop never leaves a batch half done.
"""

from __future__ import annotations

import signal
import threading

_stop = threading.Event()


def request_stop(*_args) -> None:
    _stop.set()


def clear() -> None:
    _stop.clear()


def stop_requested() -> bool:
    return _stop.is_set()


def install_sigterm_handler() -> None:
    """Turn SIGTERM into a graceful stop (main thread only, as signal requires)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
