/*
Purpose
    Sign the runtime procedures with the certificate archival_signing and
    grant its user the rights on the Django-managed archive tables (the
    restore ledger and keys too) and, for restore, INSERT on every
    provisioned source table and ALTER on one with an identity column
    (IDENTITY_INSERT); grant
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
        AND name IN (
            N'usp_build_sql', N'usp_mark_table', N'usp_archive_batch', N'usp_dispose_batch', N'usp_lock_holds',
            N'usp_build_restore_selection', N'usp_restore_compare', N'usp_restore_batch'
        );
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
    OR OBJECT_ID(N'dbo.governance_restoreledger', N'U') IS NULL
    OR OBJECT_ID(N'dbo.governance_restorekey', N'U') IS NULL
    OR OBJECT_ID(N'dbo.governance_restoredkey', N'U') IS NULL
    THROW 50700, N'Run manage.py migrate --database archive first, then re-run this script.', 1;
GO

GRANT SELECT ON OBJECT::[dbo].[governance_hold] TO [archival_signer];
GO
GRANT SELECT ON OBJECT::[dbo].[governance_holdkey] TO [archival_signer];
GO
GRANT SELECT, INSERT ON OBJECT::[dbo].[governance_batchledger] TO [archival_signer];
GO
-- Restore (archival.usp_restore_batch): the keys of a KEYS request are read,
-- each batch records the keys it restored and writes its ledger row in the
-- batch's transaction.
GRANT SELECT ON OBJECT::[dbo].[governance_restorekey] TO [archival_signer];
GO
GRANT SELECT, INSERT ON OBJECT::[dbo].[governance_restoredkey] TO [archival_signer];
GO
GRANT SELECT, INSERT ON OBJECT::[dbo].[governance_restoreledger] TO [archival_signer];
GO

-- Restore writes rows back into the source tables: the certificate user
-- needs INSERT on each provisioned source table, and ALTER on one with an
-- identity column (SET IDENTITY_INSERT needs ALTER on the table:
-- https://learn.microsoft.com/sql/t-sql/statements/set-identity-insert-transact-sql).
-- archival_admin.usp_provision_table grants both for the tables it
-- provisions from now on; this loop grants them for the tables provisioned
-- before restore existed. Only the signed procedures carry these rights: the
-- runtime login itself still has no INSERT and no ALTER in any source.
DECLARE @source_database sysname;
DECLARE @schema_name sysname;
DECLARE @table_name sysname;
DECLARE @qualified nvarchar(600);
DECLARE @exec nvarchar(400);
DECLARE @sql nvarchar(max);
DECLARE @exists int;
DECLARE @has_identity int;
DECLARE registered CURSOR LOCAL FAST_FORWARD FOR
    SELECT source_database, schema_name, table_name FROM archival.archived_table;
OPEN registered;
FETCH NEXT FROM registered INTO @source_database, @schema_name, @table_name;
WHILE @@FETCH_STATUS = 0
BEGIN
    IF DB_ID(@source_database) IS NOT NULL
    BEGIN
        SET @exec = QUOTENAME(@source_database) + N'.sys.sp_executesql';
        SET @qualified = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table_name);
        SET @exists = 0;
        SET @has_identity = 0;
        SET @sql = N'SELECT @exists = CASE WHEN OBJECT_ID(@qualified, N''U'') IS NULL THEN 0 ELSE 1 END,
    @has_identity = (SELECT COUNT(*) FROM sys.identity_columns WHERE object_id = OBJECT_ID(@qualified, N''U''));';
        EXEC @exec @sql, N'@qualified nvarchar(600), @exists int OUTPUT, @has_identity int OUTPUT',
            @qualified = @qualified, @exists = @exists OUTPUT, @has_identity = @has_identity OUTPUT;
        IF @exists = 1
        BEGIN
            SET @sql = N'GRANT INSERT ON ' + @qualified + N' TO [archival_signer]';
            IF @sql IS NULL THROW 50701, N'A grant statement came out NULL (a name over 128 characters?); stopped.', 1;
            EXEC @exec @sql;
            IF @has_identity > 0
            BEGIN
                SET @sql = N'GRANT ALTER ON ' + @qualified + N' TO [archival_signer]';
                EXEC @exec @sql;
            END;
        END;
    END;
    FETCH NEXT FROM registered INTO @source_database, @schema_name, @table_name;
END;
CLOSE registered;
DEALLOCATE registered;
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
-- governance_holdkey (archival/search/covering_holds.py). Nothing else.
GRANT SELECT ON OBJECT::[dbo].[governance_hold] TO [archive_reader];
GO
GRANT SELECT ON OBJECT::[dbo].[governance_holdkey] TO [archive_reader];
GO
