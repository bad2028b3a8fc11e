/*
Purpose
    Database-level protection of the governance trail on SQL Server, as the
    triggers of archival/disposal/triggers.py do on the other engines (which
    the migrations skip on SQL Server), tightened to what the application
    itself writes:
      control database
        governance_auditevent      never deleted; an UPDATE may only set
                                   entry_hash once (the append writes it
                                   after the insert, governance.audit_chain)
                                   or clear actor_user_id (SET_NULL when an
                                   account is deleted); nothing else changes
        governance_auditchainhead  never deleted; an UPDATE may only move the
                                   head forward (last_event_id grows) under
                                   the same name
      archive database
        governance_hold            never deleted; an UPDATE may change
                                   review_by, and set the release fields
                                   (released_by, released_at,
                                   release_reason) once; nothing else
        governance_holdkey         never deleted, never updated
Parameters (sqlcmd -v)
    ControlDb, ArchiveDb
Safety notes
    Install order: 00-07, then `manage.py migrate` and
    `manage.py migrate --database archive` as the DBA (the tables must
    exist; the script stops with a clear error otherwise), then 08, 09
    (demo), then this script. Re-run it after any migration that rebuilds
    one of these tables. Idempotent (CREATE OR ALTER). The triggers refuse
    with THROW, which ends the statement and rolls back the caller's
    transaction; they SET NOCOUNT ON so a client never reads a trigger's row
    count as its statement's. DENY DELETE (UPDATE for hold keys) to public
    as well, which outranks the runtime login's db_datawriter in the control
    database. The triggers bind db_owner too; only a DBA who
    disables a trigger (ALTER TABLE ... DISABLE TRIGGER, itself visible in
    the default trace) can get past them. Inserts into these tables must not
    use a bare OUTPUT clause (error 334 on a table with an enabled trigger).
*/
SET NOCOUNT ON;
GO
USE [$(ControlDb)];
GO

IF OBJECT_ID(N'dbo.governance_auditevent', N'U') IS NULL
    OR OBJECT_ID(N'dbo.governance_auditchainhead', N'U') IS NULL
    THROW 50800, N'Run manage.py migrate (control database) first, then re-run this script.', 1;
GO

-- Belt and braces: the runtime login has db_datawriter here, and a DENY
-- beats that GRANT (db_owner is not bound by it; the triggers are).
DENY DELETE ON OBJECT::[dbo].[governance_auditevent] TO [public];
GO
DENY DELETE ON OBJECT::[dbo].[governance_auditchainhead] TO [public];
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_auditevent_no_delete] ON [dbo].[governance_auditevent]
INSTEAD OF DELETE
AS
BEGIN
    SET NOCOUNT ON;
    THROW 50801, N''The audit trail is append-only: DELETE refused.'', 1;
END');
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_auditevent_append_only] ON [dbo].[governance_auditevent]
AFTER UPDATE
AS
BEGIN
    SET NOCOUNT ON;
    IF EXISTS (
        SELECT 1
        FROM inserted AS i
        INNER JOIN deleted AS d ON d.[id] = i.[id]
        WHERE NOT (
            (d.[entry_hash] = N'''' OR d.[entry_hash] = i.[entry_hash])
            AND (i.[actor_user_id] IS NULL OR i.[actor_user_id] = d.[actor_user_id])
            AND EXISTS (
                SELECT i.[occurred_at], i.[actor], i.[action], i.[outcome], i.[object_type], i.[object_id],
                    i.[object_repr], i.[run_id], i.[table_label], i.[counts], i.[details], i.[host], i.[prev_hash]
                INTERSECT
                SELECT d.[occurred_at], d.[actor], d.[action], d.[outcome], d.[object_type], d.[object_id],
                    d.[object_repr], d.[run_id], d.[table_label], d.[counts], d.[details], d.[host], d.[prev_hash]
            )
        )
    )
        THROW 50802, N''The audit trail is append-only: only entry_hash (once) and actor_user_id (cleared) may change.'', 1;
END');
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_auditchainhead_no_delete] ON [dbo].[governance_auditchainhead]
INSTEAD OF DELETE
AS
BEGIN
    SET NOCOUNT ON;
    THROW 50803, N''The audit chain head is never deleted.'', 1;
END');
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_auditchainhead_forward] ON [dbo].[governance_auditchainhead]
AFTER UPDATE
AS
BEGIN
    SET NOCOUNT ON;
    IF EXISTS (
        SELECT 1
        FROM inserted AS i
        INNER JOIN deleted AS d ON d.[id] = i.[id]
        WHERE i.[name] <> d.[name]
            OR i.[last_event_id] IS NULL
            OR (d.[last_event_id] IS NOT NULL AND i.[last_event_id] <= d.[last_event_id])
    )
        THROW 50804, N''The audit chain head only moves forward.'', 1;
END');
GO

USE [$(ArchiveDb)];
GO

IF OBJECT_ID(N'dbo.governance_hold', N'U') IS NULL
    OR OBJECT_ID(N'dbo.governance_holdkey', N'U') IS NULL
    THROW 50805, N'Run manage.py migrate --database archive first, then re-run this script.', 1;
GO

-- DELETE on both is denied to public in 08; hold keys are never updated either.
DENY UPDATE ON OBJECT::[dbo].[governance_holdkey] TO [public];
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_hold_no_delete] ON [dbo].[governance_hold]
INSTEAD OF DELETE
AS
BEGIN
    SET NOCOUNT ON;
    THROW 50701, N''Holds are never deleted; release them instead.'', 1;
END');
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_hold_release_only] ON [dbo].[governance_hold]
AFTER UPDATE
AS
BEGIN
    SET NOCOUNT ON;
    IF EXISTS (
        SELECT 1
        FROM inserted AS i
        INNER JOIN deleted AS d ON d.[id] = i.[id]
        WHERE NOT EXISTS (
            SELECT i.[scope], i.[source_db], i.[schema_name], i.[table_name], i.[contract_value], i.[date_from],
                i.[date_to], i.[reason], i.[placed_by], i.[placed_at], i.[hold_until]
            INTERSECT
            SELECT d.[scope], d.[source_db], d.[schema_name], d.[table_name], d.[contract_value], d.[date_from],
                d.[date_to], d.[reason], d.[placed_by], d.[placed_at], d.[hold_until]
        )
        -- Released once: afterwards the release fields stay as they are.
        OR (d.[released_at] IS NOT NULL AND NOT EXISTS (
            SELECT i.[released_at], i.[released_by], i.[release_reason]
            INTERSECT
            SELECT d.[released_at], d.[released_by], d.[release_reason]
        ))
    )
        THROW 50806, N''A hold is only released (once) or given a new review date; nothing else changes.'', 1;
END');
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_holdkey_no_delete] ON [dbo].[governance_holdkey]
INSTEAD OF DELETE
AS
BEGIN
    SET NOCOUNT ON;
    THROW 50702, N''Hold keys are never deleted.'', 1;
END');
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_holdkey_no_update] ON [dbo].[governance_holdkey]
AFTER UPDATE
AS
BEGIN
    SET NOCOUNT ON;
    THROW 50807, N''Hold keys are never changed.'', 1;
END');
GO
