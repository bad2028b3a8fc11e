/*
Purpose
    Create the control and archive databases on the SQL Server 2019 instance.
    The control database holds the Django control plane (configs, runs,
    recovery state, audit); the archive database holds the archived rows (one
    schema per source database), holds, the batch ledger, certificates and
    the archival procedures.
Parameters (sqlcmd -v)
    ControlDb   name of the control database   (e.g. ArchivalControl)
    ArchiveDb   name of the archive database   (e.g. ArchivalArchive)
Safety notes
    Idempotent: creates only what is missing, never drops or alters data.
    Run as a login with CREATE ANY DATABASE (a DBA), never as the runtime login.
    READ_COMMITTED_SNAPSHOT lets the read-only search pages and the mark step
    read without blocking archival batches; it needs a moment with no other
    connection to the database, hence WITH ROLLBACK IMMEDIATE only when the
    setting is still off (first install).
*/
SET NOCOUNT ON;
GO

IF DB_ID(N'$(ControlDb)') IS NULL
    EXEC (N'CREATE DATABASE [$(ControlDb)]');
GO

IF DB_ID(N'$(ArchiveDb)') IS NULL
    EXEC (N'CREATE DATABASE [$(ArchiveDb)]');
GO

IF EXISTS (
    SELECT 1 FROM sys.databases
    WHERE name = N'$(ArchiveDb)' AND is_read_committed_snapshot_on = 0
)
    EXEC (N'ALTER DATABASE [$(ArchiveDb)] SET READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE');
GO

IF EXISTS (
    SELECT 1 FROM sys.databases
    WHERE name = N'$(ControlDb)' AND is_read_committed_snapshot_on = 0
)
    EXEC (N'ALTER DATABASE [$(ControlDb)] SET READ_COMMITTED_SNAPSHOT ON WITH ROLLBACK IMMEDIATE');
GO
