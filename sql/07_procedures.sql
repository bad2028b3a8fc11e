/*
Purpose
    The runtime archival procedures (EXECUTE granted to archival_executor):
      archival.usp_build_sql      fills a template from archival.sql_template
                                  with fragments read from the live catalog
      archival.usp_mark_table     eligible rows, rows without a reference
                                  date, key bounds (as of the run's threshold)
      archival.usp_archive_batch  moves one keyset batch atomically inside the
                                  instance and writes its ledger row
      archival.usp_dispose_batch  deletes one batch of archive rows past
                                  retention, re-checking holds in the same
                                  transaction under the hold applock
      archival.usp_lock_holds     takes the hold applock in the caller's
                                  transaction (placing or releasing a hold)
Parameters
    See each procedure. Thresholds and retention are computed by the Python
    engine from the run's cutoff and passed in: no date arithmetic on the
    server except DATEADD(YEAR) for retention_until (which clamps 29 February
    to 28 February like every other engine). Keys travel as JSON arrays of
    strings (@key_after in, @key_high out).
Safety notes
    Nothing from a config is executed as text: the procedures take a table's
    identity, look it up in archival.archived_table (written only by the DBA's
    provisioning procedure), re-read every column from the live catalog and
    QUOTENAME every identifier; values are sp_executesql parameters.
    SET XACT_ABORT ON + TRY/CATCH: any error rolls the whole batch back.
    Batches are capped at 4,000 rows, under the 5,000-lock escalation point.
    Altering a procedure drops its signature: re-run 08_signing_and_grants.sql
    after this script, every time.
*/
SET NOCOUNT ON;
GO
USE [$(ArchiveDb)];
GO

CREATE OR ALTER PROCEDURE archival.usp_build_sql
    @source_alias sysname,
    @schema_name sysname,
    @table_name sysname,
    @template_name sysname,
    @sql nvarchar(max) OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @source_database sysname;
    DECLARE @archive_schema sysname;
    DECLARE @logic varchar(20);
    DECLARE @date_column sysname;
    DECLARE @contract_table sysname;
    DECLARE @contract_key_column sysname;
    DECLARE @contract_reference_column sysname;
    DECLARE @contract_maturity_column sysname;
    DECLARE @hold_contract_column sysname;
    DECLARE @exec nvarchar(400);
    DECLARE @catalog_sql nvarchar(max);
    DECLARE @qualified nvarchar(600);
    DECLARE @archive_table nvarchar(600);
    DECLARE @keys nvarchar(max);
    DECLARE @columns nvarchar(max);
    DECLARE @missing nvarchar(max);
    DECLARE @source nvarchar(800);
    DECLARE @reference_join nvarchar(max) = N'';
    DECLARE @reference_column nvarchar(400);
    DECLARE @child_guard nvarchar(max) = N'';
    DECLARE @hold_contract_match nvarchar(max) = N'';
    DECLARE @cursor_declare nvarchar(max);
    DECLARE @key_defs nvarchar(max);
    DECLARE @cols TABLE (
        column_id int NOT NULL PRIMARY KEY,
        name sysname NOT NULL,
        type_name sysname NOT NULL,
        max_length smallint NOT NULL,
        [precision] tinyint NOT NULL,
        scale tinyint NOT NULL,
        key_ordinal int NULL
    );
    DECLARE @contract_cols TABLE (
        column_id int NOT NULL PRIMARY KEY,
        name sysname NOT NULL,
        type_name sysname NOT NULL,
        max_length smallint NOT NULL,
        [precision] tinyint NOT NULL,
        scale tinyint NOT NULL,
        key_ordinal int NULL
    );

    SELECT
        @source_database = source_database,
        @archive_schema = archive_schema,
        @logic = archival_logic,
        @date_column = date_column,
        @contract_table = contract_table,
        @contract_key_column = contract_key_column,
        @contract_reference_column = contract_reference_column,
        @contract_maturity_column = contract_maturity_column,
        @hold_contract_column = hold_contract_column
    FROM archival.archived_table
    WHERE source_alias = @source_alias AND schema_name = @schema_name AND table_name = @table_name;
    IF @source_database IS NULL
        THROW 50200, N'This table is not provisioned: run archival_admin.usp_provision_table (DBA).', 1;
    IF DB_ID(@source_database) IS NULL
        THROW 50201, N'The source database of this table does not exist on this instance.', 1;
    IF NOT EXISTS (SELECT 1 FROM archival.sql_template WHERE template_name = @template_name)
        THROW 50202, N'Unknown SQL template: re-run 05_templates.sql.', 1;

    -- The live catalog of the source database, read in that database.
    SET @exec = QUOTENAME(@source_database) + N'.sys.sp_executesql';
    SET @catalog_sql = N'SELECT c.column_id, c.name, t.name, c.max_length, c.precision, c.scale, ic.key_ordinal
FROM sys.columns AS c
INNER JOIN sys.types AS t ON t.user_type_id = c.user_type_id
LEFT OUTER JOIN sys.indexes AS i ON i.object_id = c.object_id AND i.is_primary_key = 1
LEFT OUTER JOIN sys.index_columns AS ic
    ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.column_id = c.column_id
WHERE c.object_id = OBJECT_ID(@qualified, N''U'')';
    SET @qualified = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table_name);
    INSERT INTO @cols (column_id, name, type_name, max_length, [precision], scale, key_ordinal)
    EXEC @exec @catalog_sql, N'@qualified nvarchar(600)', @qualified = @qualified;
    IF NOT EXISTS (SELECT 1 FROM @cols)
        THROW 50203, N'The source table no longer exists.', 1;
    IF NOT EXISTS (SELECT 1 FROM @cols WHERE key_ordinal IS NOT NULL)
        THROW 50204, N'The source table has no primary key; keyset batches need one.', 1;
    IF EXISTS (SELECT 1 FROM @cols WHERE archival.fn_type_sql(type_name, max_length, [precision], scale) IS NULL)
        THROW 50205, N'The source table has a column type the archive does not copy (text, ntext, image, xml, CLR or alias types).', 1;

    SELECT @keys = N'[' + STRING_AGG(CONVERT(nvarchar(max), N'"' + STRING_ESCAPE(name, 'json') + N'"'), N',')
        WITHIN GROUP (ORDER BY key_ordinal) + N']'
    FROM @cols WHERE key_ordinal IS NOT NULL;
    SELECT @columns = N'[' + STRING_AGG(CONVERT(nvarchar(max), N'"' + STRING_ESCAPE(name, 'json') + N'"'), N',')
        WITHIN GROUP (ORDER BY column_id) + N']'
    FROM @cols;

    -- The archive table must have every source column (explicit column
    -- lists: a column added at the source stops the table here, clearly).
    SET @archive_table = QUOTENAME(@archive_schema) + N'.' + QUOTENAME(@table_name);
    IF OBJECT_ID(@archive_table, N'U') IS NULL
        THROW 50206, N'The archive table does not exist: run archival_admin.usp_provision_table (DBA).', 1;
    SELECT @missing = STRING_AGG(CONVERT(nvarchar(max), name), N', ')
    FROM (
        SELECT name FROM @cols
        UNION ALL SELECT N'archived_at' UNION ALL SELECT N'archive_run_id'
        UNION ALL SELECT N'reference_date' UNION ALL SELECT N'retention_until'
    ) AS needed
    WHERE COL_LENGTH(@archive_table, name) IS NULL;
    IF @missing IS NOT NULL
    BEGIN
        SET @missing = N'The archive table lacks columns (' + @missing + N'): run archival_admin.usp_provision_table (DBA).';
        THROW 50207, @missing, 1;
    END;

    SET @source = QUOTENAME(@source_database) + N'.' + QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table_name);
    IF @logic = 'DATE_BASED'
    BEGIN
        IF NOT EXISTS (SELECT 1 FROM @cols WHERE name = @date_column)
            THROW 50208, N'The date column of this table no longer exists.', 1;
        SET @reference_column = N's.' + QUOTENAME(@date_column);
    END
    ELSE
    BEGIN
        SET @qualified = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@contract_table);
        INSERT INTO @contract_cols (column_id, name, type_name, max_length, [precision], scale, key_ordinal)
        EXEC @exec @catalog_sql, N'@qualified nvarchar(600)', @qualified = @qualified;
        IF NOT EXISTS (SELECT 1 FROM @cols WHERE name = @contract_reference_column)
            OR NOT EXISTS (SELECT 1 FROM @contract_cols WHERE name = @contract_key_column)
            OR NOT EXISTS (SELECT 1 FROM @contract_cols WHERE name = @contract_maturity_column)
            THROW 50209, N'The contract join of this table no longer matches the catalog.', 1;
        SET @reference_join = N'LEFT OUTER JOIN ' + QUOTENAME(@source_database) + N'.' + QUOTENAME(@schema_name) + N'.'
            + QUOTENAME(@contract_table) + N' AS c ON c.' + QUOTENAME(@contract_key_column) + N' = s.'
            + QUOTENAME(@contract_reference_column);
        SET @reference_column = N'c.' + QUOTENAME(@contract_maturity_column);
    END;

    -- A contract moves only when no remaining row of a configured child
    -- table references it (children are archived first).
    SELECT @child_guard = COALESCE(STRING_AGG(
        CONVERT(nvarchar(max),
            NCHAR(10) + N'        AND NOT EXISTS (SELECT 1 FROM ' + QUOTENAME(@source_database) + N'.'
            + QUOTENAME(ch.schema_name) + N'.' + QUOTENAME(ch.table_name) + N' AS ch' + CONVERT(nvarchar(10), ch.n)
            + N' WHERE ch' + CONVERT(nvarchar(10), ch.n) + N'.' + QUOTENAME(ch.contract_reference_column)
            + N' = s.' + QUOTENAME(ch.contract_key_column) + N')'),
        N'') WITHIN GROUP (ORDER BY ch.n), N'')
    FROM (
        SELECT
            schema_name, table_name, contract_reference_column, contract_key_column,
            ROW_NUMBER() OVER (ORDER BY table_name) AS n
        FROM archival.archived_table
        WHERE source_alias = @source_alias AND schema_name = @schema_name
            AND archival_logic = 'CONTRACT_MATURITY' AND contract_table = @table_name
    ) AS ch;

    IF @hold_contract_column IS NOT NULL AND EXISTS (SELECT 1 FROM @cols WHERE name = @hold_contract_column)
        SET @hold_contract_match = NCHAR(10) + N'            OR (h.[scope] = N''CONTRACT'' AND h.[source_db] = @source_alias'
            + N' AND h.[contract_value] = CONVERT(nvarchar(200), a.' + QUOTENAME(@hold_contract_column) + N'))';

    SELECT @cursor_declare = STRING_AGG(
        CONVERT(nvarchar(max),
            N'DECLARE @k' + CONVERT(nvarchar(10), key_ordinal) + N' '
            + archival.fn_type_sql(type_name, max_length, [precision], scale)
            + N' = CAST(JSON_VALUE(@key_after, N''$[' + CONVERT(nvarchar(10), key_ordinal - 1) + N']'') AS '
            + archival.fn_type_sql(type_name, max_length, [precision], scale) + N');'),
        NCHAR(10)) WITHIN GROUP (ORDER BY key_ordinal)
    FROM @cols WHERE key_ordinal IS NOT NULL;
    SELECT @key_defs = STRING_AGG(
        CONVERT(nvarchar(max), QUOTENAME(name) + N' ' + archival.fn_type_sql(type_name, max_length, [precision], scale) + N' NOT NULL'),
        N', ') WITHIN GROUP (ORDER BY key_ordinal)
    FROM @cols WHERE key_ordinal IS NOT NULL;

    SELECT @sql = body FROM archival.sql_template WHERE template_name = @template_name;
    SET @sql = REPLACE(@sql, N'{CURSOR_DECLARE}', @cursor_declare);
    SET @sql = REPLACE(@sql, N'{KEY_DEFS}', @key_defs);
    SET @sql = REPLACE(@sql, N'{SOURCE}', @source);
    SET @sql = REPLACE(@sql, N'{ARCHIVE}', @archive_table);
    SET @sql = REPLACE(@sql, N'{REFERENCE_JOIN}', @reference_join);
    SET @sql = REPLACE(@sql, N'{REFERENCE_COLUMN}', @reference_column);
    SET @sql = REPLACE(@sql, N'{CHILD_GUARD}', @child_guard);
    SET @sql = REPLACE(@sql, N'{HOLD_CONTRACT_MATCH}', @hold_contract_match);
    SET @sql = REPLACE(@sql, N'{KEY_COLUMNS}', archival.fn_column_list(@keys, N''));
    SET @sql = REPLACE(@sql, N'{KEY_COLUMNS_S}', archival.fn_column_list(@keys, N's.'));
    SET @sql = REPLACE(@sql, N'{KEY_COLUMNS_A}', archival.fn_column_list(@keys, N'a.'));
    SET @sql = REPLACE(@sql, N'{KEY_COLUMNS_S_DESC}', REPLACE(archival.fn_column_list(@keys, N's.'), N',', N' DESC,') + N' DESC');
    SET @sql = REPLACE(@sql, N'{KEY_COLUMNS_B_DESC}', REPLACE(archival.fn_column_list(@keys, N'b.'), N',', N' DESC,') + N' DESC');
    SET @sql = REPLACE(@sql, N'{KEY_JOIN_S_B}', archival.fn_key_join(@keys, N's', N'b'));
    SET @sql = REPLACE(@sql, N'{KEY_JOIN_A_B}', archival.fn_key_join(@keys, N'a', N'b'));
    SET @sql = REPLACE(@sql, N'{KEYSET_S}', archival.fn_keyset_predicate(@keys, N's'));
    SET @sql = REPLACE(@sql, N'{KEYSET_A}', archival.fn_keyset_predicate(@keys, N'a'));
    SET @sql = REPLACE(@sql, N'{KEY_JSON_S}', archival.fn_key_json(@keys, N's'));
    SET @sql = REPLACE(@sql, N'{KEY_JSON_B}', archival.fn_key_json(@keys, N'b'));
    SET @sql = REPLACE(@sql, N'{KEY_TEXT_A}', archival.fn_key_text(@keys, N'a'));
    SET @sql = REPLACE(@sql, N'{COLUMNS}', archival.fn_column_list(@columns, N''));
    SET @sql = REPLACE(@sql, N'{COLUMNS_S}', archival.fn_column_list(@columns, N's.'));
    SET @sql = REPLACE(@sql, N'{COLUMNS_A}', archival.fn_column_list(@columns, N'a.'));
    SET @sql = REPLACE(@sql, N'{COLUMNS_DELETED}', archival.fn_column_list(@columns, N'deleted.'));
END;
GO

CREATE OR ALTER PROCEDURE archival.usp_mark_table
    @source_alias sysname,
    @schema_name sysname,
    @table_name sysname,
    @threshold date,
    @eligible bigint OUTPUT,
    @null_dates bigint OUTPUT,
    @key_low nvarchar(max) OUTPUT,
    @key_high nvarchar(max) OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @sql nvarchar(max);
    BEGIN TRY
        EXEC archival.usp_build_sql
            @source_alias = @source_alias, @schema_name = @schema_name, @table_name = @table_name,
            @template_name = N'mark_table', @sql = @sql OUTPUT;
        EXEC sys.sp_executesql
            @sql,
            N'@threshold date, @eligible bigint OUTPUT, @null_dates bigint OUTPUT, @key_low nvarchar(max) OUTPUT, @key_high nvarchar(max) OUTPUT',
            @threshold = @threshold,
            @eligible = @eligible OUTPUT,
            @null_dates = @null_dates OUTPUT,
            @key_low = @key_low OUTPUT,
            @key_high = @key_high OUTPUT;
    END TRY
    BEGIN CATCH
        THROW;
    END CATCH;
END;
GO

CREATE OR ALTER PROCEDURE archival.usp_archive_batch
    @run_id bigint,
    @config_id bigint,
    @source_alias sysname,
    @schema_name sysname,
    @table_name sysname,
    @threshold date,
    @years_retention int,
    @batch_size int,
    @batch_no int,
    @key_after nvarchar(max),
    @rows_moved int OUTPUT,
    @rows_skipped int OUTPUT,
    @key_high nvarchar(max) OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @sql nvarchar(max);
    DECLARE @batch_rows int = 0;
    DECLARE @rows_archived int = 0;
    DECLARE @conflicts int = 0;
    DECLARE @ledger_rows int;
    DECLARE @archived_at datetime2(6) = SYSUTCDATETIME();
    DECLARE @label nvarchar(400) = @source_alias + N'.' + @schema_name + N'.' + @table_name;
    SET @rows_moved = 0;
    SET @rows_skipped = 0;
    SET @key_high = NULL;

    IF @batch_size IS NULL OR @batch_size < 1 OR @batch_size > 4000
        THROW 50300, N'@batch_size must be between 1 and 4000 (below lock escalation).', 1;
    IF @years_retention IS NULL OR @years_retention < 0 OR @threshold IS NULL
        THROW 50301, N'@threshold and @years_retention are required.', 1;
    IF @key_after IS NOT NULL AND ISJSON(@key_after) = 0
        THROW 50302, N'@key_after must be a JSON array.', 1;

    BEGIN TRY
        EXEC archival.usp_build_sql
            @source_alias = @source_alias, @schema_name = @schema_name, @table_name = @table_name,
            @template_name = N'archive_batch', @sql = @sql OUTPUT;

        -- One transaction: the move, the counts and the ledger row commit
        -- together or not at all (XACT_ABORT rolls back on any error).
        BEGIN TRANSACTION;
        EXEC sys.sp_executesql
            @sql,
            N'@run_id bigint, @threshold date, @years_retention int, @batch_size int, @archived_at datetime2(6), @key_after nvarchar(max), @batch_rows int OUTPUT, @conflicts int OUTPUT, @rows_moved int OUTPUT, @rows_skipped int OUTPUT, @rows_archived int OUTPUT, @key_high nvarchar(max) OUTPUT',
            @run_id = @run_id,
            @threshold = @threshold,
            @years_retention = @years_retention,
            @batch_size = @batch_size,
            @archived_at = @archived_at,
            @key_after = @key_after,
            @batch_rows = @batch_rows OUTPUT,
            @conflicts = @conflicts OUTPUT,
            @rows_moved = @rows_moved OUTPUT,
            @rows_skipped = @rows_skipped OUTPUT,
            @rows_archived = @rows_archived OUTPUT,
            @key_high = @key_high OUTPUT;

        IF @conflicts > 0
            THROW 50303, N'Rows already archived with different values: nothing is overwritten, the table stops.', 1;

        IF @batch_rows > 0
        BEGIN
            INSERT INTO [dbo].[governance_batchledger] (
                run_id, config_id, table_label, batch_no, key_low, key_high,
                row_count, deleted_count, state, committed_at
            )
            VALUES (
                @run_id, @config_id, @label, @batch_no, @key_after, @key_high,
                @rows_moved, @rows_moved + @rows_skipped, N'MOVED', @archived_at
            );
            SELECT @ledger_rows = row_count
            FROM [dbo].[governance_batchledger]
            WHERE run_id = @run_id AND config_id = @config_id AND batch_no = @batch_no;

            -- Reconcile before commit: deleted == picked, archived == moved == ledger.
            IF @rows_moved + @rows_skipped <> @batch_rows
                OR @rows_archived <> @rows_moved
                OR @ledger_rows <> @rows_moved
                THROW 50304, N'Batch counts do not reconcile; the batch is rolled back.', 1;
        END;
        COMMIT TRANSACTION;
    END TRY
    BEGIN CATCH
        IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
        SET @rows_moved = 0;
        SET @rows_skipped = 0;
        SET @key_high = NULL;
        THROW;
    END CATCH;
END;
GO

CREATE OR ALTER PROCEDURE archival.usp_lock_holds
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @result int;
    -- The lock belongs to the caller's transaction, so it must be open.
    IF @@TRANCOUNT = 0
        THROW 50400, N'archival.usp_lock_holds must run inside the transaction that writes the hold.', 1;
    EXEC @result = sys.sp_getapplock
        @Resource = N'archival:holds', @LockMode = N'Exclusive', @LockOwner = N'Transaction', @LockTimeout = 60000;
    IF @result < 0
        THROW 50401, N'Timed out waiting for the hold lock (a disposal batch is running).', 1;
END;
GO

CREATE OR ALTER PROCEDURE archival.usp_dispose_batch
    @source_alias sysname,
    @schema_name sysname,
    @table_name sysname,
    @as_of date,
    @batch_size int,
    @key_after nvarchar(max),
    @rows_disposed int OUTPUT,
    @rows_held int OUTPUT,
    @key_high nvarchar(max) OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    DECLARE @sql nvarchar(max);
    DECLARE @batch_rows int = 0;
    SET @rows_disposed = 0;
    SET @rows_held = 0;
    SET @key_high = NULL;

    IF @batch_size IS NULL OR @batch_size < 1 OR @batch_size > 4000
        THROW 50500, N'@batch_size must be between 1 and 4000 (below lock escalation).', 1;
    IF @as_of IS NULL
        THROW 50501, N'@as_of is required.', 1;
    IF @key_after IS NOT NULL AND ISJSON(@key_after) = 0
        THROW 50502, N'@key_after must be a JSON array.', 1;

    BEGIN TRY
        EXEC archival.usp_build_sql
            @source_alias = @source_alias, @schema_name = @schema_name, @table_name = @table_name,
            @template_name = N'dispose_batch', @sql = @sql OUTPUT;

        BEGIN TRANSACTION;
        -- Placing a hold takes the same lock (archival.usp_lock_holds), so a
        -- hold placed while this batch runs waits for it, and a hold placed
        -- before is seen by the re-check below.
        EXEC archival.usp_lock_holds;
        EXEC sys.sp_executesql
            @sql,
            N'@source_alias sysname, @schema_name sysname, @table_name sysname, @as_of date, @batch_size int, @key_after nvarchar(max), @batch_rows int OUTPUT, @rows_disposed int OUTPUT, @rows_held int OUTPUT, @key_high nvarchar(max) OUTPUT',
            @source_alias = @source_alias,
            @schema_name = @schema_name,
            @table_name = @table_name,
            @as_of = @as_of,
            @batch_size = @batch_size,
            @key_after = @key_after,
            @batch_rows = @batch_rows OUTPUT,
            @rows_disposed = @rows_disposed OUTPUT,
            @rows_held = @rows_held OUTPUT,
            @key_high = @key_high OUTPUT;
        IF @rows_disposed + @rows_held <> @batch_rows
            THROW 50503, N'Disposal counts do not reconcile; the batch is rolled back.', 1;
        COMMIT TRANSACTION;
    END TRY
    BEGIN CATCH
        IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
        SET @rows_disposed = 0;
        SET @rows_held = 0;
        SET @key_high = NULL;
        THROW;
    END CATCH;
END;
GO
