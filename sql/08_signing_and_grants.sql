/*
Purpose
    Sign the runtime procedures with the certificate archival_signing and
    grant its user the rights on the Django-managed archive tables; protect
    holds at the database level. Run after 07_procedures.sql (ALTER drops a
    signature) and after `manage.py migrate --database archive` (the
    governance_* tables must exist; the script says so when they do not).
Parameters (sqlcmd -v)
    ArchiveDb, CertPassword
Safety notes
    Idempotent: signs only unsigned procedures, grants are repeatable, the
    trigger is CREATE OR ALTER. The private key password is only used here.
    Holds are never deleted (DESIGN.md): DENY DELETE to everyone but the
    owner, and an INSTEAD OF DELETE trigger refuses it even for db_owner.
*/
SET NOCOUNT ON;
GO
USE [$(ArchiveDb)];
GO

DECLARE @password nvarchar(128) = N'$(CertPassword)';
DECLARE @proc sysname;
DECLARE @sql nvarchar(max);
DECLARE procs CURSOR LOCAL FAST_FORWARD FOR
    SELECT N'archival.' + name FROM sys.procedures
    WHERE schema_id = SCHEMA_ID(N'archival')
        AND name IN (N'usp_build_sql', N'usp_mark_table', N'usp_archive_batch', N'usp_dispose_batch', N'usp_lock_holds');
OPEN procs;
FETCH NEXT FROM procs INTO @proc;
WHILE @@FETCH_STATUS = 0
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM sys.crypt_properties AS cp
        INNER JOIN sys.certificates AS c ON c.thumbprint = cp.thumbprint
        WHERE cp.major_id = OBJECT_ID(@proc) AND c.name = N'archival_signing'
    )
    BEGIN
        SET @sql = N'ADD SIGNATURE TO ' + @proc + N' BY CERTIFICATE [archival_signing] WITH PASSWORD = '
            + QUOTENAME(@password, N'''');
        EXEC sys.sp_executesql @sql;
    END;
    FETCH NEXT FROM procs INTO @proc;
END;
CLOSE procs;
DEALLOCATE procs;
GO

-- The signed code reads the registry and templates, holds, and writes the ledger.
GRANT SELECT ON SCHEMA::[archival] TO [archival_signer];
GO

IF OBJECT_ID(N'dbo.governance_hold', N'U') IS NULL
    OR OBJECT_ID(N'dbo.governance_holdkey', N'U') IS NULL
    OR OBJECT_ID(N'dbo.governance_batchledger', N'U') IS NULL
    THROW 50700, N'Run manage.py migrate --database archive first, then re-run this script.', 1;
GO

GRANT SELECT ON OBJECT::[dbo].[governance_hold] TO [archival_signer];
GO
GRANT SELECT ON OBJECT::[dbo].[governance_holdkey] TO [archival_signer];
GO
GRANT SELECT, INSERT ON OBJECT::[dbo].[governance_batchledger] TO [archival_signer];
GO

-- The Django app's own tables in the archive database.
GRANT SELECT, INSERT, UPDATE ON SCHEMA::[dbo] TO [archival_app_data];
GO
DENY DELETE ON OBJECT::[dbo].[governance_hold] TO [public];
GO
DENY DELETE ON OBJECT::[dbo].[governance_holdkey] TO [public];
GO

EXEC (N'CREATE OR ALTER TRIGGER [dbo].[tr_governance_hold_no_delete] ON [dbo].[governance_hold]
INSTEAD OF DELETE
AS
BEGIN
    SET NOCOUNT ON;
    THROW 50701, N''Holds are never deleted; release them instead.'', 1;
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
