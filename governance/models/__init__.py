from governance.models.access import ArchiveSearchAccess
from governance.models.archive import BatchLedger, Hold, HoldKey, HoldScope, LedgerState
from governance.models.audit import AuditEvent
from governance.models.configs import ArchivalLogic, TableConfig, TableType
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
    WorkerHeartbeat,
)

__all__ = [
    "FINAL_PHASES",
    "OPEN_PHASES",
    "ArchivalLogic",
    "ArchivalRun",
    "ArchiveLock",
    "ArchiveSearchAccess",
    "AuditChainHead",
    "AuditEvent",
    "BatchLedger",
    "BatchStatus",
    "Decision",
    "DispatchStage",
    "DispatchStatus",
    "DisposalApproval",
    "DisposalBatch",
    "DisposalCertificate",
    "Hold",
    "HoldKey",
    "HoldScope",
    "LedgerState",
    "Phase",
    "RecoveryState",
    "RetentionChange",
    "RetentionChangeStatus",
    "RunDispatch",
    "RunStatus",
    "SchedulerSettings",
    "TableConfig",
    "TableDispatch",
    "TableType",
    "WorkerHeartbeat",
]
