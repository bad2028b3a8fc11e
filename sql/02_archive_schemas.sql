/*
Purpose
    In the archive database: the [archival] schema (runtime procedures, helper
    functions, the table registry, the SQL templates), the [archival_admin]
    schema (DBA-only procedures) and one archive schema
    per source database, named <NamespacePrefix><source alias in lower case>
    exactly like archival.backends.sqlite.namespace_for() (archive_sourcedb1).
Parameters (sqlcmd -v)
    ArchiveDb        archive database name
    SourceAliases    comma-separated source aliases (SOURCE_DATABASES), e.g.
                     SourceDB1,SourceDB2,SourceDB3
    NamespacePrefix  ARCHIVAL_NAMESPACE_PREFIX (default archive_)
Safety notes
    Idempotent: CREATE only when missing. Schema names are built from the
    aliases with QUOTENAME after checking they are plain identifiers (the
    same rule as governance.env.ALIAS_RE). Run as a DBA.
    The registry is written only by archival.usp_provision_table (DBA); the
    runtime procedures read it and re-check every name against the catalog.
*/
SET NOCOUNT ON;
GO
USE [$(ArchiveDb)];
GO

IF SCHEMA_ID(N'archival') IS NULL
    EXEC (N'CREATE SCHEMA [archival] AUTHORIZATION [dbo]');
GO

-- DBA-only procedures (provisioning, templates): no role is granted EXECUTE here.
IF SCHEMA_ID(N'archival_admin') IS NULL
    EXEC (N'CREATE SCHEMA [archival_admin] AUTHORIZATION [dbo]');
GO

DECLARE @alias sysname;
DECLARE @schema sysname;
DECLARE @sql nvarchar(max);
DECLARE aliases CURSOR LOCAL FAST_FORWARD FOR
    SELECT LTRIM(RTRIM(value)) FROM STRING_SPLIT(N'$(SourceAliases)', N',')
    WHERE LTRIM(RTRIM(value)) <> N'';
OPEN aliases;
FETCH NEXT FROM aliases INTO @alias;
WHILE @@FETCH_STATUS = 0
BEGIN
    -- Same rule as governance.env.ALIAS_RE: a letter, then letters, digits, underscores.
    IF @alias LIKE N'%[^A-Za-z0-9_]%' OR @alias NOT LIKE N'[A-Za-z]%' OR LEN(@alias) > 63
        THROW 50100, N'SourceAliases holds an alias that is not a plain identifier', 1;
    -- A sysname variable silently cuts a longer value to 128 characters.
    IF LEN(N'$(NamespacePrefix)' + @alias) > 128
        THROW 50104, N'NamespacePrefix + alias is longer than 128 characters: no schema name fits.', 1;
    SET @schema = N'$(NamespacePrefix)' + LOWER(@alias);
    IF SCHEMA_ID(@schema) IS NULL
    BEGIN
        SET @sql = N'CREATE SCHEMA ' + QUOTENAME(@schema) + N' AUTHORIZATION [dbo]';
        EXEC sys.sp_executesql @sql;
    END;
    FETCH NEXT FROM aliases INTO @alias;
END;
CLOSE aliases;
DEALLOCATE aliases;
GO

-- One row per provisioned source table: what the runtime procedures may touch.
IF OBJECT_ID(N'archival.archived_table', N'U') IS NULL
    CREATE TABLE archival.archived_table (
        table_id int IDENTITY (1, 1) NOT NULL CONSTRAINT pk_archived_table PRIMARY KEY,
        source_alias sysname NOT NULL,
        source_database sysname NOT NULL,
        schema_name sysname NOT NULL,
        table_name sysname NOT NULL,
        archive_schema sysname NOT NULL,
        archival_logic varchar(20) NOT NULL
            CONSTRAINT ck_archived_table_logic CHECK (archival_logic IN ('DATE_BASED', 'CONTRACT_MATURITY')),
        date_column sysname NULL,
        contract_table sysname NULL,
        contract_key_column sysname NULL,
        contract_reference_column sysname NULL,
        contract_maturity_column sysname NULL,
        hold_contract_column sysname NULL,
        provisioned_by sysname NOT NULL CONSTRAINT df_archived_table_by DEFAULT (ORIGINAL_LOGIN()),
        provisioned_at datetime2(0) NOT NULL CONSTRAINT df_archived_table_at DEFAULT (SYSUTCDATETIME()),
        -- One registration per source table, as TableConfig is unique per source table.
        CONSTRAINT uq_archived_table_source UNIQUE (source_alias, schema_name, table_name)
    );
GO

-- The dynamic SQL templates, shared with the Python dry run (mssql_sql command).
IF OBJECT_ID(N'archival.sql_template', N'U') IS NULL
    CREATE TABLE archival.sql_template (
        template_name sysname NOT NULL CONSTRAINT pk_sql_template PRIMARY KEY,
        body nvarchar(max) NOT NULL,
        installed_at datetime2(0) NOT NULL CONSTRAINT df_sql_template_at DEFAULT (SYSUTCDATETIME())
    );
GO
