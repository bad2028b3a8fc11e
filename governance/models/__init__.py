from governance.models.access import ArchiveSearchAccess
from governance.models.archive import BatchLedger, Hold, HoldKey, HoldScope, LedgerState
from governance.models.audit import AuditEvent
from governance.models.disposal import (
    ArchiveLock,
    AuditChainHead,
    BatchStatus,
    Decision,
    DisposalApproval,
    DisposalBatch,
    DisposalCertificate,
    RetentionChange,
    RetentionChangeStatus,
)
from governance.models.configs import ArchivalLogic, TableConfig, TableType
from governance.models.runs import (
    FINAL_PHASES,
    OPEN_PHASES,
    ArchivalRun,
    Phase,
    RecoveryState,
    RunStatus,
)
from governance.models.scheduling import (
    DispatchStage,
    DispatchStatus,
    RunDispatch,
    SchedulerSettings,
    TableDispatch,
)

__all__ = [
    "ArchiveLock",
    "AuditChainHead",
    "BatchStatus",
    "Decision",
    "DisposalApproval",
    "DisposalBatch",
    "DisposalCertificate",
    "RetentionChange",
    "RetentionChangeStatus",
    "FINAL_PHASES",
    "OPEN_PHASES",
    "ArchivalLogic",
    "ArchivalRun",
    "ArchiveSearchAccess",
    "AuditEvent",
    "BatchLedger",
    "Hold",
    "HoldKey",
    "HoldScope",
    "LedgerState",
    "Phase",
    "RecoveryState",
    "RunStatus",
    "DispatchStage",
    "DispatchStatus",
    "RunDispatch",
    "SchedulerSettings",
    "TableDispatch",
    "TableConfig",
    "TableType",
]
