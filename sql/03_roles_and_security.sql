/*
Purpose
    Roles, the runtime logins and the signing certificate.
      archive_reader      SELECT on the archive schemas only (search pages,
                          the archive_readonly alias).
      archival_executor   EXECUTE on the [archival] procedures only. The
                          runtime login has no right on any source table's
                          rows: in each source database it is a user with
                          VIEW DEFINITION only (build_spec and the config
                          checks read the source catalog through the source
                          aliases; the signed procedures need the caller to
                          be a user there to enter the database).
      archival_app_data   the Django control plane's own tables in the archive
                          database (holds, ledger, certificates): SELECT,
                          INSERT, UPDATE (08_signing_and_grants.sql, after
                          migrate); SELECT on the archive schemas. No DELETE
                          anywhere in the archive database.
    The procedures run dynamic SQL across databases, which ownership chaining
    does not cover, so they are signed with the certificate archival_signing;
    a user created from that certificate in the archive database and in each
    source database holds exactly the rights the procedures need (granted per
    table by archival_admin.usp_provision_table). The procedures have no
    EXECUTE AS: they run as the caller, whose token gains the certificate
    user's rights in every database where that user exists (module signing),
    so no AUTHENTICATE grant is needed (AUTHENTICATE only matters for an
    impersonated context leaving its database).
Parameters (sqlcmd -v)
    ControlDb, ArchiveDb, NamespacePrefix (archive schema prefix, archive_)
    SourceDatabases   comma-separated source database names (not aliases)
    AppLogin, AppPassword         runtime login (web app, qcluster workers)
    ReaderLogin, ReaderPassword   read-only login (ARCHIVE_READONLY_DATABASE_URL)
    CertPassword      protects the certificate's private key; keep it in the
                      DBA's vault, it is needed again to re-sign procedures
Safety notes
    Idempotent: logins, users, roles and the certificate are created only
    when missing; passwords of existing logins are not changed. Run as a
    sysadmin (or securityadmin + db_owner). Never give the runtime login
    db_owner, CONTROL or DELETE on source tables. TRUSTWORTHY and
    cross-database ownership chaining stay OFF: the certificate replaces them.
    Passwords may not contain a single quote (they are passed through
    sqlcmd variables into string literals).
*/
SET NOCOUNT ON;
GO
USE [master];
GO

IF SUSER_ID(N'$(AppLogin)') IS NULL
    EXEC (N'CREATE LOGIN [$(AppLogin)] WITH PASSWORD = N''$(AppPassword)'', CHECK_POLICY = ON, DEFAULT_DATABASE = [$(ControlDb)]');
GO

IF SUSER_ID(N'$(ReaderLogin)') IS NULL
    EXEC (N'CREATE LOGIN [$(ReaderLogin)] WITH PASSWORD = N''$(ReaderPassword)'', CHECK_POLICY = ON, DEFAULT_DATABASE = [$(ArchiveDb)]');
GO

-- Replica lag (docs/pacing.md): between batches the engine reads the
-- availability group's send and redo queues of the source databases'
-- secondaries in sys.dm_hadr_database_replica_states, which needs VIEW
-- SERVER STATE (a server permission: it shows server-wide state, no data).
-- https://learn.microsoft.com/sql/relational-databases/system-dynamic-management-views/sys-dm-hadr-database-replica-states-transact-sql
GRANT VIEW SERVER STATE TO [$(AppLogin)];
GO

-- Control database: the Django control plane. Migrations run as the DBA
-- (see docs/sqlserver.md), so the runtime login needs DML only.
USE [$(ControlDb)];
GO

IF DATABASE_PRINCIPAL_ID(N'$(AppLogin)') IS NULL
    EXEC (N'CREATE USER [$(AppLogin)] FOR LOGIN [$(AppLogin)] WITH DEFAULT_SCHEMA = [dbo]');
GO
ALTER ROLE [db_datareader] ADD MEMBER [$(AppLogin)];
GO
ALTER ROLE [db_datawriter] ADD MEMBER [$(AppLogin)];
GO

USE [$(ArchiveDb)];
GO

IF DATABASE_PRINCIPAL_ID(N'archive_reader') IS NULL
    CREATE ROLE [archive_reader] AUTHORIZATION [dbo];
GO
IF DATABASE_PRINCIPAL_ID(N'archival_executor') IS NULL
    CREATE ROLE [archival_executor] AUTHORIZATION [dbo];
GO
IF DATABASE_PRINCIPAL_ID(N'archival_app_data') IS NULL
    CREATE ROLE [archival_app_data] AUTHORIZATION [dbo];
GO

IF DATABASE_PRINCIPAL_ID(N'$(AppLogin)') IS NULL
    EXEC (N'CREATE USER [$(AppLogin)] FOR LOGIN [$(AppLogin)] WITH DEFAULT_SCHEMA = [dbo]');
GO
IF DATABASE_PRINCIPAL_ID(N'$(ReaderLogin)') IS NULL
    EXEC (N'CREATE USER [$(ReaderLogin)] FOR LOGIN [$(ReaderLogin)] WITH DEFAULT_SCHEMA = [dbo]');
GO
ALTER ROLE [archival_executor] ADD MEMBER [$(AppLogin)];
GO
ALTER ROLE [archival_app_data] ADD MEMBER [$(AppLogin)];
GO
ALTER ROLE [archive_reader] ADD MEMBER [$(ReaderLogin)];
GO

GRANT EXECUTE ON SCHEMA::[archival] TO [archival_executor];
GO

-- archive_reader: SELECT on every archive schema (archive_<alias>), nothing
-- else. archival_app_data: SELECT there too, and nothing more: the engine
-- reads the archive tables' catalog (Mark refuses a table not provisioned or
-- out of date) and their keys (disposal's plan and certificates); inserts
-- and deletes go through the signed procedures only.
DECLARE @schema sysname;
DECLARE @sql nvarchar(max);
DECLARE archive_schemas CURSOR LOCAL FAST_FORWARD FOR
    -- [_] is a literal underscore: a bare _ in LIKE matches any character,
    -- so N'archive_%' would also match schemas like N'archiveX...'.
    SELECT name FROM sys.schemas
    WHERE name LIKE REPLACE(REPLACE(N'$(NamespacePrefix)', N'[', N'[[]'), N'_', N'[_]') + N'%';
OPEN archive_schemas;
FETCH NEXT FROM archive_schemas INTO @schema;
WHILE @@FETCH_STATUS = 0
BEGIN
    SET @sql = N'GRANT SELECT ON SCHEMA::' + QUOTENAME(@schema) + N' TO [archive_reader], [archival_app_data]';
    EXEC sys.sp_executesql @sql;
    FETCH NEXT FROM archive_schemas INTO @schema;
END;
CLOSE archive_schemas;
DEALLOCATE archive_schemas;
GO

-- The signing certificate and its user in the archive database.
IF CERT_ID(N'archival_signing') IS NULL
    EXEC (N'CREATE CERTIFICATE [archival_signing] ENCRYPTION BY PASSWORD = N''$(CertPassword)'' WITH SUBJECT = N''Signs the archival procedures'', EXPIRY_DATE = ''20991231''');
GO
IF DATABASE_PRINCIPAL_ID(N'archival_signer') IS NULL
    CREATE USER [archival_signer] FROM CERTIFICATE [archival_signing];
GO
-- Copy the certificate (public key only) into each source database and map
-- a user to it there; per-table SELECT/DELETE grants come with provisioning.
-- The runtime login gets a user there too, with VIEW DEFINITION and nothing
-- else: catalog reads (sys.columns, sys.foreign_keys, INFORMATION_SCHEMA) see
-- only objects the user has some permission on, and the signed procedures
-- need the caller to be a user of the database to enter it.
DECLARE @db sysname;
DECLARE @public_key nvarchar(max) = CONVERT(
    nvarchar(max), CONVERT(varchar(max), CERTENCODED(CERT_ID(N'archival_signing')), 1)
);
DECLARE @exec nvarchar(400);
DECLARE @sql nvarchar(max);
DECLARE @app_user nvarchar(300) = QUOTENAME(N'$(AppLogin)');
IF @app_user IS NULL
    THROW 50102, N'AppLogin is longer than 128 characters.', 1;
DECLARE sources CURSOR LOCAL FAST_FORWARD FOR
    SELECT LTRIM(RTRIM(value)) FROM STRING_SPLIT(N'$(SourceDatabases)', N',')
    WHERE LTRIM(RTRIM(value)) <> N'';
OPEN sources;
FETCH NEXT FROM sources INTO @db;
WHILE @@FETCH_STATUS = 0
BEGIN
    IF DB_ID(@db) IS NULL
        THROW 50101, N'SourceDatabases names a database that does not exist on this instance', 1;
    SET @exec = QUOTENAME(@db) + N'.sys.sp_executesql';
    SET @sql = N'IF CERT_ID(N''archival_signing'') IS NULL CREATE CERTIFICATE [archival_signing] FROM BINARY = '
        + @public_key + N';'
        + N' IF DATABASE_PRINCIPAL_ID(N''archival_signer'') IS NULL CREATE USER [archival_signer] FROM CERTIFICATE [archival_signing];'
        + N' IF DATABASE_PRINCIPAL_ID(N''$(AppLogin)'') IS NULL CREATE USER ' + @app_user + N' FOR LOGIN ' + @app_user
        + N' WITH DEFAULT_SCHEMA = [dbo];'
        + N' GRANT VIEW DEFINITION TO ' + @app_user + N';';
    -- A NULL piece (a NULL QUOTENAME) would make the whole statement NULL,
    -- which sp_executesql runs as nothing: refuse instead.
    IF @exec IS NULL OR @sql IS NULL
        THROW 50103, N'A source database name is longer than 128 characters.', 1;
    EXEC @exec @sql;
    FETCH NEXT FROM sources INTO @db;
END;
CLOSE sources;
DEALLOCATE sources;
GO
