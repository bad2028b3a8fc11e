/*
Purpose
    Sign the runtime procedures with the certificate archival_signing and
    grant its user the rights on the Django-managed archive tables; grant
    the app and reader roles their rights on those tables. Run after
    07_procedures.sql (ALTER drops a signature) and after
    `manage.py migrate --database archive` (the governance_* tables must
    exist; the script says so when they do not). The triggers protecting
    holds, audit events and the chain head are 10_governance_triggers.sql.
Parameters (sqlcmd -v)
    ArchiveDb, CertPassword
Safety notes
    Idempotent: signs only unsigned procedures, grants are repeatable. The
    private key password is only used here. Holds are never deleted
    (DESIGN.md): DENY DELETE to public here, and the triggers of
    10_governance_triggers.sql refuse it even for db_owner.
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

-- The Django app's own tables in the archive database: SELECT, INSERT,
-- UPDATE on dbo (holds, ledger, certificates, disposal state). No DELETE on
-- anything in this database: disposal deletes archive rows only through the
-- signed archival.usp_dispose_batch, and the app has no right at all on the
-- archive schemas. (No DENY to the app there either: a DENY in the caller's
-- token would also block the signed procedure, whose certificate user's
-- GRANT is added to that same token.)
GRANT SELECT, INSERT, UPDATE ON SCHEMA::[dbo] TO [archival_app_data];
GO
DENY DELETE ON OBJECT::[dbo].[governance_hold] TO [public];
GO
DENY DELETE ON OBJECT::[dbo].[governance_holdkey] TO [public];
GO

-- The search pages (archive_readonly alias, reader login) read the archive
-- schemas (granted in 03) and the holds covering a row: governance_hold and
-- governance_holdkey (archival/search/holds.py). Nothing else.
GRANT SELECT ON OBJECT::[dbo].[governance_hold] TO [archive_reader];
GO
GRANT SELECT ON OBJECT::[dbo].[governance_holdkey] TO [archive_reader];
GO
