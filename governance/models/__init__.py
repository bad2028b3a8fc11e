from governance.models.archive import BatchLedger, Hold, HoldKey, HoldScope, LedgerState
from governance.models.audit import AuditEvent
from governance.models.configs import ArchivalLogic, TableConfig, TableType
from governance.models.runs import FINAL_PHASES, OPEN_PHASES, ArchivalRun, Phase, RecoveryState, RunStatus

__all__ = [
    "FINAL_PHASES",
    "OPEN_PHASES",
    "ArchivalLogic",
    "ArchivalRun",
    "AuditEvent",
    "BatchLedger",
    "Hold",
    "HoldKey",
    "HoldScope",
    "LedgerState",
    "Phase",
    "RecoveryState",
    "RunStatus",
    "TableConfig",
    "TableType",
]
