"""The daily log file ``archival_YYYYMMDD.log`` operators grep and ship off-box."""

from __future__ import annotations

import os

from django.conf import settings
from django.utils import timezone


def log_line(message: str) -> None:
    now = timezone.now()
    directory = settings.ARCHIVAL["LOG_DIR"]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"archival_{now:%Y%m%d}.log"
    line = f"{now.isoformat(timespec='seconds')} pid={os.getpid()} {message}\n"
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(line)
