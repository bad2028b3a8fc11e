"""Progress display for the CLI: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys


class Progress:
    def __init__(self, stdout, quiet: bool = False):
        # quiet: machine-readable output (--json) gets no progress lines.
        self.stdout = stdout
        self.quiet = quiet
        self.tty = sys.stdout.isatty() and not quiet
        self._bar = None
        self._task = None
        self.rows = 0

    def __enter__(self):
        if self.tty:
            # rich.progress takes a tenth of a second to import: only a terminal pays it.
            from rich.progress import (
                BarColumn,
                TextColumn,
                TimeElapsedColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed} rows"),
                TimeElapsedColumn(),
            )
            self._bar.start()
            self._task = self._bar.add_task("archiving", total=None)
        return self

    def __exit__(self, *exc):
        if self._bar:
            self._bar.stop()

    def advance(self, rows: int) -> None:
        self.rows += rows
        if self._bar:
            self._bar.update(self._task, advance=rows)

    def table_done(self, result) -> None:
        text = f"{result.label}: {result.phase}, {result.moved} rows moved" + (
            f" ERROR {result.error[:100]}" if result.error else ""
        )
        if self._bar:
            self._bar.console.print(text)
            self._bar.update(self._task, description=result.label)
        elif not self.quiet:
            self.stdout.write(text)
