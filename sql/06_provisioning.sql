/*
Purpose
    archival_admin.usp_provision_table: the DBA's step that registers one
    source table for archival, creates its archive table (or adds the
    columns the source gained since) and grants the signing certificate's
    users exactly the rights the procedures need on it (restore included:
    INSERT on the source table, ALTER when it has an identity column). It is the only
    writer of archival.archived_table. Run it once per TableConfig (the same
    values as the config; manage.py mssql_sql prints the calls).
Parameters
    @source_alias      TableConfig.source_db (the Django alias, e.g. SourceDB1)
    @source_database   the database name on this instance
    @schema_name, @table_name, @archival_logic, @date_column,
    @contract_table, @contract_key_column, @contract_reference_column,
    @contract_maturity_column, @hold_contract_column: as in TableConfig
    @archive_schema    archive namespace (archive_<alias in lower case>)
Safety notes
    Run by a DBA with a privileged login; NOT granted to archival_executor
    (the runtime login cannot create or alter tables). Idempotent: re-running
    with the same values changes nothing; a source column added later is
    added to the archive table as NULL-able. Never drops a column or a table.
    Every name is checked against the live catalog and QUOTENAME'd; derived
    names (constraint, indexes) are cut to fit QUOTENAME's 128 characters,
    and a statement that still comes out NULL stops the procedure instead of
    running as nothing. Archive columns copy the source column's type (see
    archival.fn_type_sql: rowversion becomes binary(8)) and collation.
*/
SET NOCOUNT ON;
GO
USE [$(ArchiveDb)];
GO

CREATE OR ALTER PROCEDURE archival_admin.usp_provision_table
    @source_alias sysname,
    @source_database sysname,
    @schema_name sysname,
    @table_name sysname,
    @archival_logic varchar(20),
    @archive_schema sysname,
    @date_column sysname = NULL,
    @contract_table sysname = NULL,
    @contract_key_column sysname = NULL,
    @contract_reference_column sysname = NULL,
    @contract_maturity_column sysname = NULL,
    @hold_contract_column sysname = NULL
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @exec nvarchar(400);
    DECLARE @catalog_sql nvarchar(max);
    DECLARE @qualified nvarchar(600);
    DECLARE @archive_table nvarchar(600);
    DECLARE @sql nvarchar(max);
    DECLARE @cols TABLE (
        column_id int NOT NULL PRIMARY KEY,
        name sysname NOT NULL,
        type_name sysname NOT NULL,
        max_length smallint NOT NULL,
        [precision] tinyint NOT NULL,
        scale tinyint NOT NULL,
        is_nullable bit NOT NULL,
        key_ordinal int NULL,
        collation_name sysname NULL,
        is_identity bit NOT NULL
    );
    DECLARE @contract_cols TABLE (name sysname NOT NULL PRIMARY KEY);

    IF DB_ID(@source_database) IS NULL
        THROW 50600, N'@source_database does not exist on this instance.', 1;
    IF SCHEMA_ID(@archive_schema) IS NULL
        THROW 50601, N'@archive_schema does not exist: add the alias to SourceAliases and re-run 02_archive_schemas.sql.', 1;
    IF @archival_logic NOT IN ('DATE_BASED', 'CONTRACT_MATURITY')
        THROW 50602, N'@archival_logic must be DATE_BASED or CONTRACT_MATURITY.', 1;

    SET @exec = QUOTENAME(@source_database) + N'.sys.sp_executesql';
    SET @catalog_sql = N'SELECT c.column_id, c.name, t.name, c.max_length, c.[precision], c.scale, c.is_nullable, ic.key_ordinal,
    c.collation_name, c.is_identity
FROM sys.columns AS c
INNER JOIN sys.types AS t ON t.user_type_id = c.user_type_id
LEFT OUTER JOIN sys.indexes AS i ON i.object_id = c.object_id AND i.is_primary_key = 1
LEFT OUTER JOIN sys.index_columns AS ic
    ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.column_id = c.column_id
WHERE c.object_id = OBJECT_ID(@qualified, N''U'')';
    SET @qualified = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table_name);
    INSERT INTO @cols (
        column_id, name, type_name, max_length, [precision], scale, is_nullable, key_ordinal, collation_name, is_identity
    )
    EXEC @exec @catalog_sql, N'@qualified nvarchar(600)', @qualified = @qualified;

    IF NOT EXISTS (SELECT 1 FROM @cols)
        THROW 50603, N'The source table does not exist.', 1;
    IF NOT EXISTS (SELECT 1 FROM @cols WHERE key_ordinal IS NOT NULL)
        THROW 50604, N'The source table has no primary key.', 1;
    IF EXISTS (SELECT 1 FROM @cols WHERE archival.fn_type_sql(type_name, max_length, [precision], scale) IS NULL)
        THROW 50605, N'The source table has a column type the archive does not copy (text, ntext, image, xml, CLR or alias types).', 1;
    IF EXISTS (
        SELECT 1 FROM @cols
        WHERE key_ordinal IS NOT NULL
            AND type_name IN (N'binary', N'varbinary', N'timestamp', N'sql_variant', N'hierarchyid', N'geography', N'geometry', N'float', N'real')
    )
        THROW 50609, N'The primary key has a column of a type keyset batches cannot carry (binary, rowversion, float, sql_variant or CLR).', 1;
    -- A collation name goes into the DDL as is (COLLATE takes no quoted name).
    IF EXISTS (SELECT 1 FROM @cols WHERE collation_name LIKE N'%[^A-Za-z0-9_]%')
        THROW 50610, N'A column collation name is not a plain identifier.', 1;
    IF @archival_logic = 'DATE_BASED'
        AND NOT EXISTS (SELECT 1 FROM @cols WHERE name = @date_column AND type_name IN (N'date', N'datetime', N'datetime2', N'smalldatetime', N'datetimeoffset'))
        THROW 50606, N'@date_column is not a date column of the source table.', 1;
    IF @archival_logic = 'CONTRACT_MATURITY'
    BEGIN
        SET @qualified = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@contract_table);
        SET @sql = N'SELECT c.name FROM sys.columns AS c WHERE c.object_id = OBJECT_ID(@qualified, N''U'')';
        INSERT INTO @contract_cols (name)
        EXEC @exec @sql, N'@qualified nvarchar(600)', @qualified = @qualified;
        IF NOT EXISTS (SELECT 1 FROM @cols WHERE name = @contract_reference_column)
            OR NOT EXISTS (SELECT 1 FROM @contract_cols WHERE name = @contract_key_column)
            OR NOT EXISTS (SELECT 1 FROM @contract_cols WHERE name = @contract_maturity_column)
            THROW 50607, N'The contract join does not match the catalog.', 1;
    END;
    IF @hold_contract_column IS NOT NULL AND NOT EXISTS (SELECT 1 FROM @cols WHERE name = @hold_contract_column)
        THROW 50608, N'@hold_contract_column is not a column of the source table.', 1;

    SET @archive_table = QUOTENAME(@archive_schema) + N'.' + QUOTENAME(@table_name);
    BEGIN TRANSACTION;
    IF OBJECT_ID(@archive_table, N'U') IS NULL
    BEGIN
        SELECT @sql = N'CREATE TABLE ' + @archive_table + N' (' + STRING_AGG(
            -- Each column keeps its source collation: keys that differ only in
            -- case stay distinct in the archive when the source says so.
            CONVERT(nvarchar(max), QUOTENAME(name) + N' ' + archival.fn_type_sql(type_name, max_length, [precision], scale)
                + COALESCE(N' COLLATE ' + collation_name, N'')
                + CASE WHEN is_nullable = 1 THEN N' NULL' ELSE N' NOT NULL' END),
            N', ') WITHIN GROUP (ORDER BY column_id)
            + N', [archived_at] datetime2(6) NOT NULL, [archive_run_id] bigint NOT NULL'
            + N', [reference_date] date NULL, [retention_until] date NULL'
            -- The unique source key: invariant 2 (at most one copy of a row).
            -- LEFT(..., 128): QUOTENAME returns NULL above 128 characters.
            + N', CONSTRAINT ' + QUOTENAME(LEFT(N'pk_' + @archive_schema + N'_' + @table_name, 128)) + N' PRIMARY KEY CLUSTERED ('
            + (SELECT STRING_AGG(CONVERT(nvarchar(max), QUOTENAME(k.name)), N', ') WITHIN GROUP (ORDER BY k.key_ordinal)
               FROM @cols AS k WHERE k.key_ordinal IS NOT NULL)
            + N'))'
        FROM @cols;
        IF @sql IS NULL THROW 50611, N'The archive table DDL came out NULL; nothing was created.', 1;
        EXEC sys.sp_executesql @sql;
        -- Disposal counts expired rows by retention_until; the search filters
        -- on the contract column; restore selects a run's rows. No index on
        -- reference_date: every batch paid for one that no frequent reader
        -- used (docs/archive-tables.md).
        SET @sql = N'CREATE INDEX ' + QUOTENAME(LEFT(N'ix_' + @table_name + N'_retention', 128)) + N' ON ' + @archive_table + N' ([retention_until])';
        IF @sql IS NULL THROW 50612, N'A provisioning statement came out NULL (a name over 128 characters?); stopped.', 1;
        EXEC sys.sp_executesql @sql;
        SET @sql = N'CREATE INDEX ' + QUOTENAME(LEFT(N'ix_' + @table_name + N'_run', 128)) + N' ON ' + @archive_table + N' ([archive_run_id])';
        IF @sql IS NULL THROW 50612, N'A provisioning statement came out NULL (a name over 128 characters?); stopped.', 1;
        EXEC sys.sp_executesql @sql;
        IF COALESCE(@hold_contract_column, @contract_reference_column) IS NOT NULL
        BEGIN
            SET @sql = N'CREATE INDEX ' + QUOTENAME(LEFT(N'ix_' + @table_name + N'_contract', 128)) + N' ON ' + @archive_table
                + N' (' + QUOTENAME(COALESCE(@hold_contract_column, @contract_reference_column)) + N')';
            IF @sql IS NULL THROW 50612, N'A provisioning statement came out NULL (a name over 128 characters?); stopped.', 1;
            EXEC sys.sp_executesql @sql;
        END;
    END
    ELSE
    BEGIN
        -- Columns the source gained since: added NULL-able (existing archive rows have none).
        SELECT @sql = STRING_AGG(
            CONVERT(nvarchar(max), N'ALTER TABLE ' + @archive_table + N' ADD ' + QUOTENAME(name) + N' '
                + archival.fn_type_sql(type_name, max_length, [precision], scale)
                + COALESCE(N' COLLATE ' + collation_name, N'') + N' NULL;'),
            NCHAR(10)) WITHIN GROUP (ORDER BY column_id)
        FROM @cols WHERE COL_LENGTH(@archive_table, name) IS NULL;
        IF @sql IS NOT NULL EXEC sys.sp_executesql @sql;
    END;

    MERGE archival.archived_table AS t
    USING (SELECT @source_alias AS source_alias, @schema_name AS schema_name, @table_name AS table_name) AS s
        ON t.source_alias = s.source_alias AND t.schema_name = s.schema_name AND t.table_name = s.table_name
    WHEN MATCHED THEN UPDATE SET
        source_database = @source_database, archive_schema = @archive_schema, archival_logic = @archival_logic,
        date_column = @date_column, contract_table = @contract_table, contract_key_column = @contract_key_column,
        contract_reference_column = @contract_reference_column, contract_maturity_column = @contract_maturity_column,
        hold_contract_column = @hold_contract_column
    WHEN NOT MATCHED THEN INSERT (
        source_alias, source_database, schema_name, table_name, archive_schema, archival_logic, date_column,
        contract_table, contract_key_column, contract_reference_column, contract_maturity_column, hold_contract_column
    ) VALUES (
        @source_alias, @source_database, @schema_name, @table_name, @archive_schema, @archival_logic, @date_column,
        @contract_table, @contract_key_column, @contract_reference_column, @contract_maturity_column, @hold_contract_column
    );

    -- The signed procedures' rights: on the archive table here ...
    SET @sql = N'GRANT SELECT, INSERT, UPDATE, DELETE ON ' + @archive_table + N' TO [archival_signer]';
    IF @sql IS NULL THROW 50612, N'A provisioning statement came out NULL (a name over 128 characters?); stopped.', 1;
    EXEC sys.sp_executesql @sql;
    -- ... and SELECT + DELETE on the source table (SELECT on its contract
    -- table) in the source database; INSERT for a restore
    -- (archival.usp_restore_batch), and ALTER when the table has an identity
    -- column: a restore puts the archived identity values back under
    -- SET IDENTITY_INSERT, which needs ALTER on the table
    -- (https://learn.microsoft.com/sql/t-sql/statements/set-identity-insert-transact-sql).
    -- The runtime login gets none of these.
    SET @sql = N'GRANT SELECT, INSERT, DELETE ON ' + QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table_name) + N' TO [archival_signer]';
    IF @sql IS NULL THROW 50612, N'A provisioning statement came out NULL (a name over 128 characters?); stopped.', 1;
    EXEC @exec @sql;
    IF EXISTS (SELECT 1 FROM @cols WHERE is_identity = 1)
    BEGIN
        SET @sql = N'GRANT ALTER ON ' + QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table_name) + N' TO [archival_signer]';
        IF @sql IS NULL THROW 50612, N'A provisioning statement came out NULL (a name over 128 characters?); stopped.', 1;
        EXEC @exec @sql;
    END;
    IF @archival_logic = 'CONTRACT_MATURITY'
    BEGIN
        SET @sql = N'GRANT SELECT ON ' + QUOTENAME(@schema_name) + N'.' + QUOTENAME(@contract_table) + N' TO [archival_signer]';
        IF @sql IS NULL THROW 50612, N'A provisioning statement came out NULL (a name over 128 characters?); stopped.', 1;
        EXEC @exec @sql;
    END;
    COMMIT TRANSACTION;
END;
GO
