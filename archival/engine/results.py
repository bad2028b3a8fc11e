"""Result objects the engine returns; entry points only render them."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class TableResult:
    state_id: int
    label: str
    phase: str
    moved: int = 0
    batches: int = 0
    done: bool = False
    skipped: str = ""  # why this worker did nothing (lease held elsewhere, final phase)
    lease_lost: bool = False  # another worker took the table over mid-way; this one stopped
    lease_taken_by: str = ""
    waiting_for: str = ""  # WAITING: "database:<alias>" or "lock:<table>"
    error: str = ""
    eligible: int | None = None
    archived_total: int = 0
    # Rows Mark found with a reference value that is not a date: they stay in the source.
    unreadable_dates: int | None = None
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    run_id: int
    status: str
    cutoff: str
    tables: list[TableResult] = field(default_factory=list)

    @property
    def moved(self) -> int:
        return sum(t.moved for t in self.tables)

    @property
    def failed(self) -> list[TableResult]:
        return [t for t in self.tables if t.phase == "FAILED"]

    @property
    def lease_lost(self) -> list[TableResult]:
        return [t for t in self.tables if t.lease_lost]

    @property
    def waiting(self) -> list[TableResult]:
        return [t for t in self.tables if t.phase == "WAITING"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.lease_lost and not self.waiting

    @property
    def unreadable_dates(self) -> int:
        return sum(t.unreadable_dates or 0 for t in self.tables)

    def as_dict(self) -> dict:
        return {
            "run_id": self.run_id,
            "status": self.status,
            "cutoff": self.cutoff,
            "moved": self.moved,
            "failed": len(self.failed),
            "lease_lost": len(self.lease_lost),
            "unreadable_dates": self.unreadable_dates,
            "waiting": len(self.waiting),
            "tables": [t.as_dict() for t in self.tables],
        }


@dataclass
class TablePlan:
    label: str
    mode: str = ""
    threshold: str = ""
    eligible: int | None = None
    null_dates: int | None = None
    # Rows whose reference value is not a date (never eligible), and the
    # keys of the first few, for someone to go and correct them.
    unreadable_dates: int | None = None
    unreadable_examples: list[list] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    sql: list[str] = field(default_factory=list)


@dataclass
class PlanResult:
    cutoff: str
    tables: list[TablePlan] = field(default_factory=list)

    @property
    def eligible(self) -> int:
        return sum(t.eligible or 0 for t in self.tables)

    def as_dict(self) -> dict:
        return {
            "cutoff": self.cutoff,
            "eligible": self.eligible,
            "tables": [asdict(t) for t in self.tables],
        }
