/*
Purpose
    The runtime archival procedures (EXECUTE granted to archival_executor):
      archival.usp_build_sql      fills a template from archival.sql_template
                                  with fragments read from the live catalog
      archival.usp_mark_table     eligible rows, rows without a reference
                                  date, key bounds (as of the run's threshold)
      archival.usp_archive_batch  moves one keyset batch atomically inside the
                                  instance and writes its ledger row
      archival.usp_build_restore_selection
                                  the predicate of a restore selection (key
                                  range, contract, keys, dates, run, rows a
                                  child references), names from the catalog
      archival.usp_restore_compare
                                  a restore preview's comparison with the
                                  source: conflicting and identical rows
      archival.usp_restore_batch  moves one keyset batch of selected archive
                                  rows back into the source atomically and
                                  writes its RestoreLedger row
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
    SET NOCOUNT ON, SET DEADLOCK_PRIORITY LOW and SET LOCK_TIMEOUT
    @lock_timeout_ms (default 10,000 ms) in every procedure: settings made in
    a procedure revert when it returns, so the caller's session is left as it
    was. A lock time-out (1222) or a deadlock (1205) rolls the batch back and
    reaches the caller as that error number: transient, retried with backoff.
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
    DECLARE @mark_child_guard nvarchar(max) = N'';
    DECLARE @hold_contract_match nvarchar(max) = N'';
    DECLARE @cursor_declare nvarchar(max);
    DECLARE @key_defs nvarchar(max);
    DECLARE @key_types nvarchar(max);
    DECLARE @compare_s nvarchar(max);
    DECLARE @compare_a nvarchar(max);
    -- Restore (template restore_batch): the columns an INSERT into the
    -- source may name (not computed, not rowversion), IDENTITY_INSERT around
    -- it when the source has an identity column, and the identical-values
    -- check over those columns.
    DECLARE @insert_columns nvarchar(max);
    DECLARE @insert_columns_a nvarchar(max);
    DECLARE @identity_on nvarchar(max) = N'';
    DECLARE @identity_off nvarchar(max) = N'';
    DECLARE @restore_compare_s nvarchar(max);
    DECLARE @restore_compare_a nvarchar(max);
    DECLARE @cols TABLE (
        column_id int NOT NULL PRIMARY KEY,
        name sysname NOT NULL,
        type_name sysname NOT NULL,
        max_length smallint NOT NULL,
        [precision] tinyint NOT NULL,
        scale tinyint NOT NULL,
        key_ordinal int NULL,
        collation_name sysname NULL,
        is_identity bit NOT NULL,
        is_computed bit NOT NULL
    );
    -- Configured tables of this source and schema whose rows reference this
    -- table: through a one-column foreign key (sys.foreign_keys) or through
    -- their contract join. A row here moves only when no remaining row of
    -- any of them references it (archival.engine.spec: children go first).
    DECLARE @children TABLE (
        table_name sysname NOT NULL,
        reference_column sysname NOT NULL,
        key_column sysname NOT NULL,
        PRIMARY KEY (table_name, reference_column, key_column)
    );
    DECLARE @fk_children TABLE (
        table_name sysname NOT NULL,
        reference_column sysname NOT NULL,
        key_column sysname NOT NULL
    );
    DECLARE @contract_cols TABLE (
        column_id int NOT NULL PRIMARY KEY,
        name sysname NOT NULL,
        type_name sysname NOT NULL,
        max_length smallint NOT NULL,
        [precision] tinyint NOT NULL,
        scale tinyint NOT NULL,
        key_ordinal int NULL,
        collation_name sysname NULL,
        is_identity bit NOT NULL,
        is_computed bit NOT NULL
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
    SET @catalog_sql = N'SELECT c.column_id, c.name, t.name, c.max_length, c.[precision], c.scale, ic.key_ordinal, c.collation_name,
    c.is_identity, c.is_computed
FROM sys.columns AS c
INNER JOIN sys.types AS t ON t.user_type_id = c.user_type_id
LEFT OUTER JOIN sys.indexes AS i ON i.object_id = c.object_id AND i.is_primary_key = 1
LEFT OUTER JOIN sys.index_columns AS ic
    ON ic.object_id = i.object_id AND ic.index_id = i.index_id AND ic.column_id = c.column_id
WHERE c.object_id = OBJECT_ID(@qualified, N''U'')';
    SET @qualified = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table_name);
    INSERT INTO @cols (column_id, name, type_name, max_length, [precision], scale, key_ordinal, collation_name, is_identity, is_computed)
    EXEC @exec @catalog_sql, N'@qualified nvarchar(600)', @qualified = @qualified;
    IF NOT EXISTS (SELECT 1 FROM @cols)
        THROW 50203, N'The source table no longer exists.', 1;
    IF NOT EXISTS (SELECT 1 FROM @cols WHERE key_ordinal IS NOT NULL)
        THROW 50204, N'The source table has no primary key; keyset batches need one.', 1;
    IF EXISTS (SELECT 1 FROM @cols WHERE archival.fn_type_sql(type_name, max_length, [precision], scale) IS NULL)
        THROW 50205, N'The source table has a column type the archive does not copy (text, ntext, image, xml, CLR or alias types).', 1;
    -- Keys travel as JSON text and back through CAST: binary, rowversion and
    -- CLR values do not survive that round trip.
    IF EXISTS (
        SELECT 1 FROM @cols
        WHERE key_ordinal IS NOT NULL
            AND type_name IN (N'binary', N'varbinary', N'timestamp', N'sql_variant', N'hierarchyid', N'geography', N'geometry', N'float', N'real')
    )
        THROW 50210, N'The source table has a primary key column of a type keyset batches cannot carry (binary, rowversion, float, sql_variant or CLR).', 1;
    IF EXISTS (SELECT 1 FROM @cols WHERE collation_name LIKE N'%[^A-Za-z0-9_]%')
        THROW 50211, N'A column collation name is not a plain identifier.', 1;

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
        INSERT INTO @contract_cols (column_id, name, type_name, max_length, [precision], scale, key_ordinal, collation_name, is_identity, is_computed)
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

    -- The children (see @children above), both kinds, in the source's own
    -- catalog: one-column foreign keys whose referencing table is registered
    -- for the same source alias and schema.
    SET @catalog_sql = N'SELECT pt.name, pc.name, rc.name
FROM sys.foreign_keys AS fk
INNER JOIN sys.foreign_key_columns AS fkc ON fkc.constraint_object_id = fk.object_id
INNER JOIN sys.tables AS pt ON pt.object_id = fk.parent_object_id
INNER JOIN sys.columns AS pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
INNER JOIN sys.columns AS rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
WHERE fk.referenced_object_id = OBJECT_ID(@qualified, N''U'')
    AND pt.schema_id = SCHEMA_ID(@schema_name)
    AND (SELECT COUNT(*) FROM sys.foreign_key_columns AS x WHERE x.constraint_object_id = fk.object_id) = 1';
    SET @qualified = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table_name);
    INSERT INTO @fk_children (table_name, reference_column, key_column)
    EXEC @exec @catalog_sql, N'@qualified nvarchar(600), @schema_name sysname', @qualified = @qualified, @schema_name = @schema_name;
    INSERT INTO @children (table_name, reference_column, key_column)
    SELECT table_name, reference_column, key_column FROM (
        SELECT f.table_name, f.reference_column, f.key_column
        FROM @fk_children AS f
        INNER JOIN archival.archived_table AS r
            ON r.source_alias = @source_alias AND r.schema_name = @schema_name AND r.table_name = f.table_name
        WHERE f.table_name <> @table_name
        UNION
        SELECT r.table_name, r.contract_reference_column, r.contract_key_column
        FROM archival.archived_table AS r
        WHERE r.source_alias = @source_alias AND r.schema_name = @schema_name
            AND r.archival_logic = 'CONTRACT_MATURITY' AND r.contract_table = @table_name
            AND r.table_name <> @table_name
    ) AS both_kinds;
    SELECT @child_guard = COALESCE(STRING_AGG(
        CONVERT(nvarchar(max),
            NCHAR(10) + N'        AND NOT EXISTS (SELECT 1 FROM ' + QUOTENAME(@source_database) + N'.'
            + QUOTENAME(@schema_name) + N'.' + QUOTENAME(ch.table_name) + N' AS ch' + CONVERT(nvarchar(10), ch.n)
            + N' WHERE ch' + CONVERT(nvarchar(10), ch.n) + N'.' + QUOTENAME(ch.reference_column)
            + N' = s.' + QUOTENAME(ch.key_column) + N')'),
        N'') WITHIN GROUP (ORDER BY ch.n), N'')
    FROM (
        SELECT
            table_name, reference_column, key_column,
            ROW_NUMBER() OVER (ORDER BY table_name, reference_column, key_column) AS n
        FROM @children
    ) AS ch;
    -- Every child is registered with the columns its rule needs (the
    -- provisioning checked them); a NULL would drop the child from the
    -- STRING_AGG below without a word.
    IF EXISTS (
        SELECT 1 FROM @children AS c
        INNER JOIN archival.archived_table AS r
            ON r.source_alias = @source_alias AND r.schema_name = @schema_name AND r.table_name = c.table_name
        WHERE (r.archival_logic = 'DATE_BASED' AND r.date_column IS NULL)
            OR (r.archival_logic = 'CONTRACT_MATURITY' AND (r.contract_table IS NULL OR r.contract_key_column IS NULL
                OR r.contract_reference_column IS NULL OR r.contract_maturity_column IS NULL))
    )
        THROW 50213, N'A child table of this table is registered without the columns its rule needs: re-run its provisioning.', 1;
    -- At mark time the children have not moved yet: a row counts as eligible
    -- when every child row referencing it will itself be archived by this
    -- run (archival.engine.spec.TableSpec.parent_rule, at_mark). Each child's
    -- threshold comes in @child_thresholds, a JSON object {"<child table>":
    -- "YYYY-MM-DD"} built from the run's cutoff; a child missing from it
    -- counts as having nothing eligible (the move-time rule: never more).
    SELECT @mark_child_guard = COALESCE(STRING_AGG(
        CONVERT(nvarchar(max),
            NCHAR(10) + N'        AND NOT EXISTS (SELECT 1 FROM ' + QUOTENAME(@source_database) + N'.'
            + QUOTENAME(@schema_name) + N'.' + QUOTENAME(ch.table_name) + N' AS ch' + ch.n
            + N' WHERE ch' + ch.n + N'.' + QUOTENAME(ch.reference_column) + N' = s.' + QUOTENAME(ch.key_column)
            + N' AND NOT (' + CASE
                WHEN ch.archival_logic = 'DATE_BASED'
                    THEN N'ch' + ch.n + N'.' + QUOTENAME(ch.date_column) + N' IS NOT NULL AND ch' + ch.n + N'.'
                        + QUOTENAME(ch.date_column) + N' < ' + ch.threshold
                ELSE N'EXISTS (SELECT 1 FROM ' + QUOTENAME(@source_database) + N'.' + QUOTENAME(@schema_name) + N'.'
                    + QUOTENAME(ch.contract_table) + N' AS cc' + ch.n + N' WHERE cc' + ch.n + N'.'
                    + QUOTENAME(ch.contract_key_column) + N' = ch' + ch.n + N'.' + QUOTENAME(ch.contract_reference_column)
                    + N' AND cc' + ch.n + N'.' + QUOTENAME(ch.contract_maturity_column) + N' < ' + ch.threshold + N')'
            END + N'))'),
        N'') WITHIN GROUP (ORDER BY ch.ordinal), N'')
    FROM (
        SELECT
            c.table_name, c.reference_column, c.key_column, r.archival_logic, r.date_column, r.contract_table,
            r.contract_key_column, r.contract_reference_column, r.contract_maturity_column,
            ROW_NUMBER() OVER (ORDER BY c.table_name, c.reference_column, c.key_column) AS ordinal,
            CONVERT(nvarchar(10), ROW_NUMBER() OVER (ORDER BY c.table_name, c.reference_column, c.key_column)) AS n,
            N'COALESCE(CAST(JSON_VALUE(@child_thresholds, N''$."'
                + REPLACE(STRING_ESCAPE(c.table_name, 'json'), N'''', N'''''')
                + N'"'') AS date), CONVERT(date, ''00010101''))' AS threshold
        FROM @children AS c
        INNER JOIN archival.archived_table AS r
            ON r.source_alias = @source_alias AND r.schema_name = @schema_name AND r.table_name = c.table_name
    ) AS ch;

    IF @hold_contract_column IS NOT NULL AND EXISTS (SELECT 1 FROM @cols WHERE name = @hold_contract_column)
        SET @hold_contract_match = NCHAR(10) + N'            OR (h.[scope] = N''CONTRACT'' AND h.[source_db] = @source_alias'
            + N' AND h.[contract_value] = CONVERT(nvarchar(200), a.' + QUOTENAME(@hold_contract_column)
            + N') COLLATE DATABASE_DEFAULT)';

    SELECT @cursor_declare = STRING_AGG(
        CONVERT(nvarchar(max),
            N'DECLARE @k' + CONVERT(nvarchar(10), key_ordinal) + N' '
            + archival.fn_type_sql(type_name, max_length, [precision], scale)
            + N' = CAST(JSON_VALUE(@key_after, N''$[' + CONVERT(nvarchar(10), key_ordinal - 1) + N']'') AS '
            + archival.fn_type_sql(type_name, max_length, [precision], scale) + N');'),
        NCHAR(10)) WITHIN GROUP (ORDER BY key_ordinal)
    FROM @cols WHERE key_ordinal IS NOT NULL;
    -- #batch/#candidate take tempdb's collation unless told: each key column
    -- keeps its source collation, so joins to the source and the archive
    -- (which copies it) compare alike and never fail with error 468.
    SELECT @key_defs = STRING_AGG(
        CONVERT(nvarchar(max), QUOTENAME(name) + N' ' + archival.fn_type_sql(type_name, max_length, [precision], scale)
            + COALESCE(N' COLLATE ' + collation_name, N'') + N' NOT NULL'),
        N', ') WITHIN GROUP (ORDER BY key_ordinal)
    FROM @cols WHERE key_ordinal IS NOT NULL;
    SELECT @key_types = N'[' + STRING_AGG(CONVERT(nvarchar(max), N'"' + STRING_ESCAPE(type_name, 'json') + N'"'), N',')
        WITHIN GROUP (ORDER BY key_ordinal) + N']'
    FROM @cols WHERE key_ordinal IS NOT NULL;
    -- The identical-values check compares with INTERSECT; geography and
    -- geometry are not comparable, their serialized bytes are.
    SELECT
        @compare_s = STRING_AGG(CONVERT(nvarchar(max), CASE
            WHEN type_name IN (N'geography', N'geometry') THEN N'CONVERT(varbinary(max), s.' + QUOTENAME(name) + N')'
            ELSE N's.' + QUOTENAME(name) END), N', ') WITHIN GROUP (ORDER BY column_id),
        @compare_a = STRING_AGG(CONVERT(nvarchar(max), CASE
            WHEN type_name IN (N'geography', N'geometry') THEN N'CONVERT(varbinary(max), a.' + QUOTENAME(name) + N')'
            ELSE N'a.' + QUOTENAME(name) END), N', ') WITHIN GROUP (ORDER BY column_id)
    FROM @cols;

    -- A restore writes the source's own columns back: computed columns are
    -- computed again and a rowversion column takes a new value (neither can
    -- be inserted into); an identity column takes the archived value under
    -- IDENTITY_INSERT, which needs ALTER on the table (granted to the
    -- certificate user by provisioning and 08_signing_and_grants.sql).
    SELECT
        @insert_columns = STRING_AGG(CONVERT(nvarchar(max), QUOTENAME(name)), N', ') WITHIN GROUP (ORDER BY column_id),
        @insert_columns_a = STRING_AGG(CONVERT(nvarchar(max), N'a.' + QUOTENAME(name)), N', ')
            WITHIN GROUP (ORDER BY column_id),
        @restore_compare_s = STRING_AGG(CONVERT(nvarchar(max), CASE
            WHEN type_name IN (N'geography', N'geometry') THEN N'CONVERT(varbinary(max), s.' + QUOTENAME(name) + N')'
            ELSE N's.' + QUOTENAME(name) END), N', ') WITHIN GROUP (ORDER BY column_id),
        @restore_compare_a = STRING_AGG(CONVERT(nvarchar(max), CASE
            WHEN type_name IN (N'geography', N'geometry') THEN N'CONVERT(varbinary(max), a.' + QUOTENAME(name) + N')'
            ELSE N'a.' + QUOTENAME(name) END), N', ') WITHIN GROUP (ORDER BY column_id)
    FROM @cols
    WHERE is_computed = 0 AND type_name <> N'timestamp';
    IF EXISTS (SELECT 1 FROM @cols WHERE is_identity = 1)
    BEGIN
        SET @identity_on = N'SET IDENTITY_INSERT ' + @source + N' ON;';
        SET @identity_off = N'SET IDENTITY_INSERT ' + @source + N' OFF;';
    END;
    -- An archive column the source no longer has (dropped there since the
    -- rows were archived) would be lost by a restore: refused, with names.
    IF @template_name IN (N'restore_batch', N'restore_compare')
    BEGIN
        SET @missing = NULL;
        SELECT @missing = STRING_AGG(CONVERT(nvarchar(max), ac.name), N', ')
        FROM sys.columns AS ac
        WHERE ac.object_id = OBJECT_ID(@archive_table, N'U')
            AND ac.name NOT IN (N'archived_at', N'archive_run_id', N'reference_date', N'retention_until')
            AND NOT EXISTS (SELECT 1 FROM @cols AS c WHERE c.name = ac.name);
        IF @missing IS NOT NULL
        BEGIN
            SET @missing = N'The archive table has columns the source table no longer has (' + @missing
                + N'): restoring would lose their values; add them back to the source first.';
            THROW 50214, @missing, 1;
        END;
    END;

    SELECT @sql = body FROM archival.sql_template WHERE template_name = @template_name;
    SET @sql = REPLACE(@sql, N'{CURSOR_DECLARE}', @cursor_declare);
    SET @sql = REPLACE(@sql, N'{KEY_DEFS}', @key_defs);
    SET @sql = REPLACE(@sql, N'{SOURCE}', @source);
    SET @sql = REPLACE(@sql, N'{ARCHIVE}', @archive_table);
    SET @sql = REPLACE(@sql, N'{REFERENCE_JOIN}', @reference_join);
    SET @sql = REPLACE(@sql, N'{REFERENCE_COLUMN}', @reference_column);
    SET @sql = REPLACE(@sql, N'{CHILD_GUARD}', @child_guard);
    SET @sql = REPLACE(@sql, N'{MARK_CHILD_GUARD}', @mark_child_guard);
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
    SET @sql = REPLACE(@sql, N'{KEY_TEXT_A}', archival.fn_key_text(@keys, @key_types, N'a'));
    SET @sql = REPLACE(@sql, N'{COLUMNS}', archival.fn_column_list(@columns, N''));
    SET @sql = REPLACE(@sql, N'{COLUMNS_DELETED}', archival.fn_column_list(@columns, N'deleted.'));
    SET @sql = REPLACE(@sql, N'{COMPARE_S}', @compare_s);
    SET @sql = REPLACE(@sql, N'{COMPARE_A}', @compare_a);
    SET @sql = REPLACE(@sql, N'{KEY_COLUMNS_B}', archival.fn_column_list(@keys, N'b.'));
    SET @sql = REPLACE(@sql, N'{KEY_JOIN_S_A}', archival.fn_key_join(@keys, N's', N'a'));
    SET @sql = REPLACE(@sql, N'{INSERT_COLUMNS}', @insert_columns);
    SET @sql = REPLACE(@sql, N'{INSERT_COLUMNS_A}', @insert_columns_a);
    SET @sql = REPLACE(@sql, N'{IDENTITY_INSERT_ON}', @identity_on);
    SET @sql = REPLACE(@sql, N'{IDENTITY_INSERT_OFF}', @identity_off);
    SET @sql = REPLACE(@sql, N'{RESTORE_COMPARE_S}', @restore_compare_s);
    SET @sql = REPLACE(@sql, N'{RESTORE_COMPARE_A}', @restore_compare_a);
    -- REPLACE with a NULL piece (a NULL QUOTENAME, a NULL fragment) makes the
    -- whole statement NULL, which sp_executesql would run as nothing.
    IF @sql IS NULL
        THROW 50212, N'The dynamic SQL of this table came out NULL (a name over 128 characters?); nothing was run.', 1;
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
    @key_high nvarchar(max) OUTPUT,
    @lock_timeout_ms int = 10000,
    @child_thresholds nvarchar(max) = NULL
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    SET DEADLOCK_PRIORITY LOW;
    IF @lock_timeout_ms IS NULL OR @lock_timeout_ms < 0
        THROW 50305, N'@lock_timeout_ms must be 0 or more milliseconds.', 1;
    -- The procedure owns its transaction: with IMPLICIT_TRANSACTIONS on (a
    -- driver with autocommit off) BEGIN TRANSACTION would open two and the
    -- commit leave one open. Reverts when the procedure returns.
    SET IMPLICIT_TRANSACTIONS OFF;
    IF @child_thresholds IS NOT NULL AND ISJSON(@child_thresholds) = 0
        THROW 50306, N'@child_thresholds must be a JSON object of child table name to threshold date.', 1;
    SET LOCK_TIMEOUT @lock_timeout_ms;
    DECLARE @sql nvarchar(max);
    BEGIN TRY
        EXEC archival.usp_build_sql
            @source_alias = @source_alias, @schema_name = @schema_name, @table_name = @table_name,
            @template_name = N'mark_table', @sql = @sql OUTPUT;
        EXEC sys.sp_executesql
            @sql,
            N'@threshold date, @child_thresholds nvarchar(max), @eligible bigint OUTPUT, @null_dates bigint OUTPUT, @key_low nvarchar(max) OUTPUT, @key_high nvarchar(max) OUTPUT',
            @threshold = @threshold,
            @child_thresholds = @child_thresholds,
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
    @key_high nvarchar(max) OUTPUT,
    @lock_timeout_ms int = 10000
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    SET DEADLOCK_PRIORITY LOW;
    IF @lock_timeout_ms IS NULL OR @lock_timeout_ms < 0
        THROW 50305, N'@lock_timeout_ms must be 0 or more milliseconds.', 1;
    -- The procedure owns its transaction: with IMPLICIT_TRANSACTIONS on (a
    -- driver with autocommit off) BEGIN TRANSACTION would open two and the
    -- commit leave one open. Reverts when the procedure returns.
    SET IMPLICIT_TRANSACTIONS OFF;
    SET LOCK_TIMEOUT @lock_timeout_ms;
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

CREATE OR ALTER PROCEDURE archival.usp_build_restore_selection
    @source_alias sysname,
    @schema_name sysname,
    @table_name sysname,
    @selection nvarchar(max),
    @declare nvarchar(max) OUTPUT,
    @predicate nvarchar(max) OUTPUT
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    -- Which archive rows a restore selects, as a predicate on the archive
    -- row "a" ({SELECTION} of the restore_batch template) and the DECLAREs of
    -- its typed variables ({SELECTION_DECLARE}). Every value stays in the
    -- JSON @selection, which the batch receives as an sp_executesql
    -- parameter: the DECLAREs read it with JSON_VALUE at constant paths
    -- ($.key_low[0], $.child.value, ...). Only names enter the text, read
    -- from the registry and the catalog and QUOTENAME'd. A parent table's
    -- selection (REFERENCED) nests its child's: the rows of ours the
    -- selected archived rows of the child reference, level by level.
    DECLARE @depth int = 0;
    DECLARE @path nvarchar(400) = N'$';
    DECLARE @table sysname = @table_name;
    DECLARE @kind nvarchar(20);
    DECLARE @archive_schema sysname;
    DECLARE @source_database sysname;
    DECLARE @archive_table nvarchar(600);
    DECLARE @alias nvarchar(20);
    DECLARE @prefix nvarchar(20);
    DECLARE @keys nvarchar(max);
    DECLARE @key_types nvarchar(max);
    DECLARE @key_count int;
    DECLARE @bound_count int;
    DECLARE @column sysname;
    DECLARE @registered_contract_column sysname;
    DECLARE @registered_reference_column sysname;
    DECLARE @child_table sysname;
    DECLARE @ref_column sysname;
    DECLARE @child_archive nvarchar(600);
    DECLARE @child_source nvarchar(600);
    DECLARE @child_alias nvarchar(20);
    DECLARE @linked int;
    DECLARE @exec nvarchar(400);
    DECLARE @fk_sql nvarchar(max);
    DECLARE @qualified nvarchar(600);
    DECLARE @opening nvarchar(max) = N'';
    DECLARE @closing nvarchar(max) = N'';
    DECLARE @own nvarchar(max);
    DECLARE @bound nvarchar(max);
    DECLARE @key_cols TABLE (
        key_ordinal int NOT NULL PRIMARY KEY,
        name sysname NOT NULL,
        type_name sysname NOT NULL,
        max_length smallint NOT NULL,
        [precision] tinyint NOT NULL,
        scale tinyint NOT NULL
    );
    SET @declare = N'';
    SET @predicate = NULL;
    IF @selection IS NULL OR ISJSON(@selection) = 0
        THROW 50850, N'@selection must be a JSON object (kind and its values).', 1;

    WHILE 1 = 1
    BEGIN
        IF @depth > 8
            THROW 50851, N'The restore selection nests parent tables more than 8 levels deep.', 1;
        SET @alias = CASE WHEN @depth = 0 THEN N'a' ELSE N'r' + CONVERT(nvarchar(10), @depth) END;
        SET @prefix = N'@s' + CONVERT(nvarchar(10), @depth) + N'_';
        SET @kind = JSON_VALUE(@selection, @path + N'.kind');
        SET @archive_schema = NULL;
        SELECT
            @archive_schema = archive_schema,
            @source_database = source_database,
            @registered_contract_column = hold_contract_column,
            @registered_reference_column = contract_reference_column
        FROM archival.archived_table
        WHERE source_alias = @source_alias AND schema_name = @schema_name AND table_name = @table;
        IF @archive_schema IS NULL
            THROW 50852, N'A table of the restore selection is not provisioned: run archival_admin.usp_provision_table (DBA).', 1;
        SET @archive_table = QUOTENAME(@archive_schema) + N'.' + QUOTENAME(@table);
        IF OBJECT_ID(@archive_table, N'U') IS NULL
            THROW 50853, N'The archive table of a table in the restore selection does not exist.', 1;

        -- The archive table's primary key is the source key (provisioning
        -- builds it so), read from this database's catalog.
        DELETE FROM @key_cols;
        INSERT INTO @key_cols (key_ordinal, name, type_name, max_length, [precision], scale)
        SELECT ic.key_ordinal, c.name, t.name, c.max_length, c.[precision], c.scale
        FROM sys.indexes AS i
        INNER JOIN sys.index_columns AS ic ON ic.object_id = i.object_id AND ic.index_id = i.index_id
        INNER JOIN sys.columns AS c ON c.object_id = ic.object_id AND c.column_id = ic.column_id
        INNER JOIN sys.types AS t ON t.user_type_id = c.user_type_id
        WHERE i.object_id = OBJECT_ID(@archive_table, N'U') AND i.is_primary_key = 1 AND ic.key_ordinal > 0;
        IF NOT EXISTS (SELECT 1 FROM @key_cols)
            THROW 50854, N'An archive table of the restore selection has no primary key: re-run its provisioning.', 1;
        SELECT
            @keys = N'[' + STRING_AGG(CONVERT(nvarchar(max), N'"' + STRING_ESCAPE(name, 'json') + N'"'), N',')
                WITHIN GROUP (ORDER BY key_ordinal) + N']',
            @key_types = N'[' + STRING_AGG(CONVERT(nvarchar(max), N'"' + STRING_ESCAPE(type_name, 'json') + N'"'), N',')
                WITHIN GROUP (ORDER BY key_ordinal) + N']',
            @key_count = COUNT(*)
        FROM @key_cols;

        -- An approved request takes only rows archived by its approval: rows
        -- archived since were in no preview anyone approved.
        SET @bound = N'';
        IF JSON_VALUE(@selection, @path + N'.archived_by') IS NOT NULL
        BEGIN
            IF TRY_CONVERT(datetime2, JSON_VALUE(@selection, @path + N'.archived_by'), 126) IS NULL
                THROW 50871, N'archived_by of a restore selection is an ISO 8601 timestamp.', 1;
            SET @declare = @declare + N'DECLARE ' + @prefix + N'archived_by datetime2 = CONVERT(datetime2, '
                + N'JSON_VALUE(@selection, N''' + @path + N'.archived_by''), 126);' + NCHAR(10);
            SET @bound = @alias + N'.[archived_at] <= ' + @prefix + N'archived_by AND ';
        END;

        IF @kind = N'REFERENCED'
        BEGIN
            -- Our rows that the child's selected archived rows reference:
            -- through a one-column foreign key of the child (the source
            -- catalog) or through the child's contract join (the registry).
            -- Names are sysname: a longer one would be cut silently, so it is refused.
            IF LEN(JSON_VALUE(@selection, @path + N'.key_column')) > 128
                OR LEN(JSON_VALUE(@selection, @path + N'.child_table')) > 128
                OR LEN(JSON_VALUE(@selection, @path + N'.ref_column')) > 128
                THROW 50870, N'A name in the restore selection is longer than 128 characters.', 1;
            SET @column = JSON_VALUE(@selection, @path + N'.key_column');
            SET @child_table = JSON_VALUE(@selection, @path + N'.child_table');
            SET @ref_column = JSON_VALUE(@selection, @path + N'.ref_column');
            IF @column IS NULL OR @child_table IS NULL OR @ref_column IS NULL
                OR JSON_QUERY(@selection, @path + N'.child') IS NULL
                THROW 50855, N'A REFERENCED selection needs key_column, child_table, ref_column and the child''s selection.', 1;
            IF COL_LENGTH(@archive_table, @column) IS NULL
                THROW 50856, N'The key_column of a REFERENCED selection is not a column of the table.', 1;
            SET @linked = 0;
            SELECT @linked = 1 FROM archival.archived_table
            WHERE source_alias = @source_alias AND schema_name = @schema_name AND table_name = @child_table
                AND archival_logic = 'CONTRACT_MATURITY' AND contract_table = @table
                AND contract_reference_column = @ref_column AND contract_key_column = @column;
            IF @linked = 0
            BEGIN
                SET @exec = QUOTENAME(@source_database) + N'.sys.sp_executesql';
                SET @fk_sql = N'SELECT @linked = COUNT(*)
FROM sys.foreign_keys AS fk
INNER JOIN sys.foreign_key_columns AS fkc ON fkc.constraint_object_id = fk.object_id
INNER JOIN sys.columns AS pc ON pc.object_id = fkc.parent_object_id AND pc.column_id = fkc.parent_column_id
INNER JOIN sys.columns AS rc ON rc.object_id = fkc.referenced_object_id AND rc.column_id = fkc.referenced_column_id
WHERE fk.parent_object_id = OBJECT_ID(@child, N''U'') AND fk.referenced_object_id = OBJECT_ID(@qualified, N''U'')
    AND pc.name = @ref_column AND rc.name = @key_column
    AND (SELECT COUNT(*) FROM sys.foreign_key_columns AS x WHERE x.constraint_object_id = fk.object_id) = 1';
                SET @qualified = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@table);
                SET @child_source = QUOTENAME(@schema_name) + N'.' + QUOTENAME(@child_table);
                EXEC @exec @fk_sql,
                    N'@child nvarchar(600), @qualified nvarchar(600), @ref_column sysname, @key_column sysname, @linked int OUTPUT',
                    @child = @child_source, @qualified = @qualified, @ref_column = @ref_column, @key_column = @column,
                    @linked = @linked OUTPUT;
            END;
            IF COALESCE(@linked, 0) = 0
                THROW 50857, N'A REFERENCED selection names a child table and columns that do not reference this table (no foreign key, no contract join).', 1;
            SET @child_archive = NULL;
            SELECT @child_archive = QUOTENAME(archive_schema) + N'.' + QUOTENAME(table_name)
            FROM archival.archived_table
            WHERE source_alias = @source_alias AND schema_name = @schema_name AND table_name = @child_table;
            IF @child_archive IS NULL OR COL_LENGTH(@child_archive, @ref_column) IS NULL
                THROW 50858, N'The child table of a REFERENCED selection is not provisioned or lacks ref_column.', 1;
            SET @child_alias = N'r' + CONVERT(nvarchar(10), @depth + 1);
            SET @opening = @opening + @bound + N'EXISTS (SELECT 1 FROM ' + @child_archive + N' AS ' + @child_alias + N' WHERE '
                + @child_alias + N'.' + QUOTENAME(@ref_column) + N' = ' + @alias + N'.' + QUOTENAME(@column) + N' AND (';
            SET @closing = @closing + N'))';
            SET @table = @child_table;
            SET @path = @path + N'.child';
            SET @depth = @depth + 1;
            CONTINUE;
        END;

        IF @kind = N'KEY_RANGE'
        BEGIN
            -- Inclusive at both ends; a missing (or null) end is open. An end
            -- that is there must be an array with one value per key column.
            SET @own = N'';
            IF JSON_VALUE(@selection, @path + N'.key_low') IS NOT NULL
                OR JSON_VALUE(@selection, @path + N'.key_high') IS NOT NULL
                THROW 50859, N'key_low and key_high of a KEY_RANGE selection are JSON arrays (one value per key column).', 1;
            IF JSON_QUERY(@selection, @path + N'.key_low') IS NOT NULL
            BEGIN
                SELECT @bound_count = COUNT(*) FROM OPENJSON(@selection, @path + N'.key_low');
                IF @bound_count <> @key_count
                    THROW 50860, N'key_low of the KEY_RANGE selection does not have one value per key column.', 1;
                SELECT @declare = @declare + STRING_AGG(CONVERT(nvarchar(max),
                    N'DECLARE ' + @prefix + N'lo' + CONVERT(nvarchar(10), key_ordinal) + N' '
                    + archival.fn_type_sql(type_name, max_length, [precision], scale)
                    + N' = ' + CASE WHEN type_name IN (N'binary', N'varbinary')
                        -- hex without 0x (style 2): a CAST would take the text's own bytes
                        THEN N'CONVERT(' + archival.fn_type_sql(type_name, max_length, [precision], scale) + N', JSON_VALUE(@selection, N''' + @path + N'.key_low[' + CONVERT(nvarchar(10), key_ordinal - 1) + N']''), 2);'
                        ELSE N'CAST(JSON_VALUE(@selection, N''' + @path + N'.key_low[' + CONVERT(nvarchar(10), key_ordinal - 1) + N']'') AS '
                            + archival.fn_type_sql(type_name, max_length, [precision], scale) + N');'
                    END + NCHAR(10)),
                    N'') WITHIN GROUP (ORDER BY key_ordinal)
                FROM @key_cols;
                SET @own = N'(' + archival.fn_key_bound(@keys, @alias, N'>', @prefix + N'lo') + N')';
            END;
            IF JSON_QUERY(@selection, @path + N'.key_high') IS NOT NULL
            BEGIN
                SELECT @bound_count = COUNT(*) FROM OPENJSON(@selection, @path + N'.key_high');
                IF @bound_count <> @key_count
                    THROW 50861, N'key_high of the KEY_RANGE selection does not have one value per key column.', 1;
                SELECT @declare = @declare + STRING_AGG(CONVERT(nvarchar(max),
                    N'DECLARE ' + @prefix + N'hi' + CONVERT(nvarchar(10), key_ordinal) + N' '
                    + archival.fn_type_sql(type_name, max_length, [precision], scale)
                    + N' = ' + CASE WHEN type_name IN (N'binary', N'varbinary')
                        -- hex without 0x (style 2): a CAST would take the text's own bytes
                        THEN N'CONVERT(' + archival.fn_type_sql(type_name, max_length, [precision], scale) + N', JSON_VALUE(@selection, N''' + @path + N'.key_high[' + CONVERT(nvarchar(10), key_ordinal - 1) + N']''), 2);'
                        ELSE N'CAST(JSON_VALUE(@selection, N''' + @path + N'.key_high[' + CONVERT(nvarchar(10), key_ordinal - 1) + N']'') AS '
                            + archival.fn_type_sql(type_name, max_length, [precision], scale) + N');'
                    END + NCHAR(10)),
                    N'') WITHIN GROUP (ORDER BY key_ordinal)
                FROM @key_cols;
                SET @own = @own + CASE WHEN @own = N'' THEN N'' ELSE N' AND ' END
                    + N'(' + archival.fn_key_bound(@keys, @alias, N'<', @prefix + N'hi') + N')';
            END;
            IF @own = N''
                SET @own = N'1 = 1';
        END
        ELSE IF @kind = N'CONTRACT'
        BEGIN
            -- The contract column holds match (TableConfig.contract_column_for_holds),
            -- compared as text like the hold match, in the archive's collation.
            IF LEN(JSON_VALUE(@selection, @path + N'.column')) > 128
                THROW 50870, N'A name in the restore selection is longer than 128 characters.', 1;
            SET @column = JSON_VALUE(@selection, @path + N'.column');
            IF @column IS NULL OR JSON_VALUE(@selection, @path + N'.value') IS NULL
                THROW 50862, N'A CONTRACT selection needs the contract column and a value.', 1;
            IF (@column <> @registered_contract_column OR @registered_contract_column IS NULL)
                AND (@column <> @registered_reference_column OR @registered_reference_column IS NULL)
                THROW 50863, N'The column of the CONTRACT selection is not the contract column this table was provisioned with.', 1;
            IF COL_LENGTH(@archive_table, @column) IS NULL
                THROW 50864, N'The contract column of the CONTRACT selection is not a column of the archive table.', 1;
            SET @declare = @declare + N'DECLARE ' + @prefix + N'contract nvarchar(4000) = JSON_VALUE(@selection, N'''
                + @path + N'.value'');' + NCHAR(10);
            SET @own = N'CONVERT(nvarchar(4000), ' + @alias + N'.' + QUOTENAME(@column) + N') COLLATE DATABASE_DEFAULT = '
                + @prefix + N'contract';
        END
        ELSE IF @kind = N'KEYS'
        BEGIN
            -- The request's keys (RestoreKey) in the canonical key text of
            -- HoldKey (archival.rowkeys), built as the hold check builds it.
            IF TRY_CAST(JSON_VALUE(@selection, @path + N'.request_id') AS bigint) IS NULL
                THROW 50865, N'A KEYS selection needs the request_id whose RestoreKey rows list the keys.', 1;
            SET @declare = @declare + N'DECLARE ' + @prefix + N'request bigint = CAST(JSON_VALUE(@selection, N'''
                + @path + N'.request_id'') AS bigint);' + NCHAR(10);
            SET @own = N'EXISTS (SELECT 1 FROM [dbo].[governance_restorekey] AS rk' + CONVERT(nvarchar(10), @depth)
                + N' WHERE rk' + CONVERT(nvarchar(10), @depth) + N'.[request_id] = ' + @prefix + N'request AND rk'
                + CONVERT(nvarchar(10), @depth) + N'.[key_text] = ' + archival.fn_key_text(@keys, @key_types, @alias) + N')';
        END
        ELSE IF @kind = N'DATE_RANGE'
        BEGIN
            -- reference_date inclusive at both ends (a missing end is open); a
            -- row without a reference date is never in a date range.
            IF (JSON_VALUE(@selection, @path + N'.date_from') IS NOT NULL
                    AND TRY_CONVERT(date, JSON_VALUE(@selection, @path + N'.date_from'), 23) IS NULL)
                OR (JSON_VALUE(@selection, @path + N'.date_to') IS NOT NULL
                    AND TRY_CONVERT(date, JSON_VALUE(@selection, @path + N'.date_to'), 23) IS NULL)
                THROW 50866, N'date_from and date_to of a DATE_RANGE selection are YYYY-MM-DD dates.', 1;
            SET @declare = @declare
                + N'DECLARE ' + @prefix + N'from date = CONVERT(date, JSON_VALUE(@selection, N''' + @path + N'.date_from''), 23);'
                + NCHAR(10)
                + N'DECLARE ' + @prefix + N'to date = CONVERT(date, JSON_VALUE(@selection, N''' + @path + N'.date_to''), 23);'
                + NCHAR(10);
            SET @own = @alias + N'.[reference_date] IS NOT NULL AND (' + @prefix + N'from IS NULL OR ' + @alias
                + N'.[reference_date] >= ' + @prefix + N'from) AND (' + @prefix + N'to IS NULL OR ' + @alias
                + N'.[reference_date] <= ' + @prefix + N'to)';
        END
        ELSE IF @kind = N'RUN'
        BEGIN
            IF TRY_CAST(JSON_VALUE(@selection, @path + N'.archive_run_id') AS bigint) IS NULL
                THROW 50867, N'A RUN selection needs the archive_run_id.', 1;
            SET @declare = @declare + N'DECLARE ' + @prefix + N'run bigint = CAST(JSON_VALUE(@selection, N'''
                + @path + N'.archive_run_id'') AS bigint);' + NCHAR(10);
            SET @own = @alias + N'.[archive_run_id] = ' + @prefix + N'run';
        END
        ELSE
            THROW 50868, N'Unknown restore selection kind (KEY_RANGE, CONTRACT, KEYS, DATE_RANGE, RUN or REFERENCED).', 1;
        IF @bound <> N''
            SET @own = @bound + N'(' + @own + N')';
        BREAK;
    END;

    SET @predicate = @opening + @own + @closing;
    -- A NULL piece (a name over 128 characters) would make the whole
    -- predicate NULL, and the statement with it.
    IF @predicate IS NULL OR @declare IS NULL
        THROW 50869, N'The restore selection came out NULL (a name over 128 characters?); nothing was run.', 1;
END;
GO

CREATE OR ALTER PROCEDURE archival.usp_restore_compare
    @source_alias sysname,
    @schema_name sysname,
    @table_name sysname,
    @selection nvarchar(max),
    @conflicts bigint OUTPUT,
    @identical bigint OUTPUT,
    @lock_timeout_ms int = 10000
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    SET DEADLOCK_PRIORITY LOW;
    IF @lock_timeout_ms IS NULL OR @lock_timeout_ms < 0
        THROW 50305, N'@lock_timeout_ms must be 0 or more milliseconds.', 1;
    -- Reads only; like usp_mark_table it leaves no implicit transaction open
    -- in the caller's session. Reverts when the procedure returns.
    SET IMPLICIT_TRANSACTIONS OFF;
    SET LOCK_TIMEOUT @lock_timeout_ms;
    -- A restore preview on SQL Server: the runtime login reads no source
    -- table, so the comparison of the selected archive rows with the source
    -- runs here, signed, with the batch's own selection and columns.
    DECLARE @statement nvarchar(max);
    DECLARE @selection_declare nvarchar(max);
    DECLARE @selection_predicate nvarchar(max);
    SET @conflicts = 0;
    SET @identical = 0;
    BEGIN TRY
        EXEC archival.usp_build_sql
            @source_alias = @source_alias, @schema_name = @schema_name, @table_name = @table_name,
            @template_name = N'restore_compare', @sql = @statement OUTPUT;
        EXEC archival.usp_build_restore_selection
            @source_alias = @source_alias, @schema_name = @schema_name, @table_name = @table_name,
            @selection = @selection, @declare = @selection_declare OUTPUT, @predicate = @selection_predicate OUTPUT;
        SET @statement = REPLACE(@statement, N'{SELECTION_DECLARE}', @selection_declare);
        SET @statement = REPLACE(@statement, N'{SELECTION}', @selection_predicate);
        IF @statement IS NULL
            THROW 50806, N'The restore comparison came out NULL; nothing was run.', 1;
        EXEC sys.sp_executesql
            @statement,
            N'@selection nvarchar(max), @conflicts bigint OUTPUT, @identical bigint OUTPUT',
            @selection = @selection,
            @conflicts = @conflicts OUTPUT,
            @identical = @identical OUTPUT;
    END TRY
    BEGIN CATCH
        THROW;
    END CATCH;
END;
GO

CREATE OR ALTER PROCEDURE archival.usp_restore_batch
    @request_id bigint,
    @config_id bigint,
    @source_alias sysname,
    @schema_name sysname,
    @table_name sysname,
    @selection nvarchar(max),
    @as_of date,
    @batch_size int,
    @batch_no int,
    @key_after nvarchar(max),
    @rows_restored int OUTPUT,
    @rows_skipped int OUTPUT,
    @rows_deleted int OUTPUT,
    @rows_held int OUTPUT,
    @key_high nvarchar(max) OUTPUT,
    @lock_timeout_ms int = 10000
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    SET DEADLOCK_PRIORITY LOW;
    IF @lock_timeout_ms IS NULL OR @lock_timeout_ms < 0
        THROW 50305, N'@lock_timeout_ms must be 0 or more milliseconds.', 1;
    -- The procedure owns its transaction: with IMPLICIT_TRANSACTIONS on (a
    -- driver with autocommit off) BEGIN TRANSACTION would open two and the
    -- commit leave one open. Reverts when the procedure returns.
    SET IMPLICIT_TRANSACTIONS OFF;
    SET LOCK_TIMEOUT @lock_timeout_ms;
    -- @statement, not @sql: the restore fills its own two tokens after
    -- archival.usp_build_sql filled the catalog's.
    DECLARE @statement nvarchar(max);
    DECLARE @selection_declare nvarchar(max);
    DECLARE @selection_predicate nvarchar(max);
    DECLARE @batch_rows int = 0;
    DECLARE @conflicts int = 0;
    DECLARE @conflict_key nvarchar(max);
    DECLARE @rows_in_source int = 0;
    DECLARE @rows_recorded int = 0;
    DECLARE @ledger_rows int;
    DECLARE @message nvarchar(2048);
    DECLARE @committed_at datetime2(6) = SYSUTCDATETIME();
    DECLARE @label nvarchar(400) = @source_alias + N'.' + @schema_name + N'.' + @table_name;
    SET @rows_restored = 0;
    SET @rows_skipped = 0;
    SET @rows_deleted = 0;
    SET @rows_held = 0;
    SET @key_high = NULL;

    IF @batch_size IS NULL OR @batch_size < 1 OR @batch_size > 4000
        THROW 50800, N'@batch_size must be between 1 and 4000 (below lock escalation).', 1;
    IF @request_id IS NULL OR @config_id IS NULL OR @batch_no IS NULL OR @as_of IS NULL
        THROW 50801, N'@request_id, @config_id, @batch_no and @as_of are required.', 1;
    IF @key_after IS NOT NULL AND ISJSON(@key_after) = 0
        THROW 50802, N'@key_after must be a JSON array.', 1;

    BEGIN TRY
        EXEC archival.usp_build_sql
            @source_alias = @source_alias, @schema_name = @schema_name, @table_name = @table_name,
            @template_name = N'restore_batch', @sql = @statement OUTPUT;
        EXEC archival.usp_build_restore_selection
            @source_alias = @source_alias, @schema_name = @schema_name, @table_name = @table_name,
            @selection = @selection, @declare = @selection_declare OUTPUT, @predicate = @selection_predicate OUTPUT;
        SET @statement = REPLACE(@statement, N'{SELECTION_DECLARE}', @selection_declare);
        SET @statement = REPLACE(@statement, N'{SELECTION}', @selection_predicate);
        IF @statement IS NULL
            THROW 50803, N'The restore statement came out NULL; nothing was run.', 1;

        -- One transaction: the rows back in the source, their archive copies
        -- gone, the counts and the ledger row commit together or not at all.
        BEGIN TRANSACTION;
        EXEC sys.sp_executesql
            @statement,
            N'@request_id bigint, @config_id bigint, @batch_no int, @source_alias sysname, @schema_name sysname, @table_name sysname, @selection nvarchar(max), @as_of date, @batch_size int, @key_after nvarchar(max), @batch_rows int OUTPUT, @conflicts int OUTPUT, @conflict_key nvarchar(max) OUTPUT, @rows_restored int OUTPUT, @rows_skipped int OUTPUT, @rows_deleted int OUTPUT, @rows_held int OUTPUT, @rows_in_source int OUTPUT, @rows_recorded int OUTPUT, @key_high nvarchar(max) OUTPUT',
            @request_id = @request_id,
            @config_id = @config_id,
            @batch_no = @batch_no,
            @source_alias = @source_alias,
            @schema_name = @schema_name,
            @table_name = @table_name,
            @selection = @selection,
            @as_of = @as_of,
            @batch_size = @batch_size,
            @key_after = @key_after,
            @batch_rows = @batch_rows OUTPUT,
            @conflicts = @conflicts OUTPUT,
            @conflict_key = @conflict_key OUTPUT,
            @rows_restored = @rows_restored OUTPUT,
            @rows_skipped = @rows_skipped OUTPUT,
            @rows_deleted = @rows_deleted OUTPUT,
            @rows_held = @rows_held OUTPUT,
            @rows_in_source = @rows_in_source OUTPUT,
            @rows_recorded = @rows_recorded OUTPUT,
            @key_high = @key_high OUTPUT;

        IF @conflicts > 0
        BEGIN
            SET @message = LEFT(N'Restore of ' + @label + N' stops: the source already has key '
                + COALESCE(@conflict_key, N'?') + N' with other values (' + CONVERT(nvarchar(10), @conflicts)
                + N' such row(s) in this batch); nothing is overwritten and nothing of the batch moved.', 2000);
            THROW 50804, @message, 1;
        END;

        IF @batch_rows > 0
        BEGIN
            INSERT INTO [dbo].[governance_restoreledger] (
                request_id, config_id, table_label, batch_no, key_low, key_high,
                row_count, skipped_identical, deleted_count, held_count, state, committed_at
            )
            VALUES (
                @request_id, @config_id, @label, @batch_no, @key_after, @key_high,
                @rows_restored, @rows_skipped, @rows_deleted, @rows_held, N'MOVED', @committed_at
            );
            SELECT @ledger_rows = row_count
            FROM [dbo].[governance_restoreledger]
            WHERE request_id = @request_id AND config_id = @config_id AND batch_no = @batch_no;

            -- Reconcile before commit: every picked row left the archive,
            -- each either inserted or already there identical; every one of
            -- them is in the source now and recorded as restored; the
            -- ledger says what was inserted.
            IF @rows_deleted <> @batch_rows
                OR @rows_deleted <> @rows_restored + @rows_skipped
                OR @rows_in_source <> @rows_deleted
                OR @rows_recorded <> @rows_deleted
                OR @ledger_rows <> @rows_restored
                THROW 50805, N'Restore batch counts do not reconcile; the batch is rolled back.', 1;
        END;
        COMMIT TRANSACTION;
    END TRY
    BEGIN CATCH
        IF @@TRANCOUNT > 0 ROLLBACK TRANSACTION;
        SET @rows_restored = 0;
        SET @rows_skipped = 0;
        SET @rows_deleted = 0;
        SET @rows_held = 0;
        SET @key_high = NULL;
        THROW;
    END CATCH;
END;
GO

CREATE OR ALTER PROCEDURE archival.usp_lock_holds
    @lock_timeout_ms int = 10000
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    SET DEADLOCK_PRIORITY LOW;
    DECLARE @result int;
    DECLARE @opened int;
    IF @lock_timeout_ms IS NULL OR @lock_timeout_ms < 0
        THROW 50402, N'@lock_timeout_ms must be 0 or more milliseconds.', 1;
    -- The lock belongs to the caller's transaction, so one must be open.
    -- Under IMPLICIT_TRANSACTIONS (a driver with autocommit off, as Django's
    -- atomic blocks on mssql-django) @@TRANCOUNT is still 0 until the first
    -- statement that reads or writes a table: such a SELECT opens the
    -- caller's implicit transaction here, which the caller commits.
    IF @@TRANCOUNT = 0 AND (@@OPTIONS & 2) = 2
        SELECT TOP (1) @opened = 1 FROM archival.sql_template;
    IF @@TRANCOUNT = 0
        THROW 50400, N'archival.usp_lock_holds must run inside the transaction that writes the hold.', 1;
    EXEC @result = sys.sp_getapplock
        @Resource = N'archival:holds', @LockMode = N'Exclusive', @LockOwner = N'Transaction',
        @LockTimeout = @lock_timeout_ms;
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
    @key_high nvarchar(max) OUTPUT,
    @lock_timeout_ms int = 10000
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    SET DEADLOCK_PRIORITY LOW;
    IF @lock_timeout_ms IS NULL OR @lock_timeout_ms < 0
        THROW 50305, N'@lock_timeout_ms must be 0 or more milliseconds.', 1;
    -- The procedure owns its transaction: with IMPLICIT_TRANSACTIONS on (a
    -- driver with autocommit off) BEGIN TRANSACTION would open two and the
    -- commit leave one open. Reverts when the procedure returns.
    SET IMPLICIT_TRANSACTIONS OFF;
    SET LOCK_TIMEOUT @lock_timeout_ms;
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
        EXEC archival.usp_lock_holds @lock_timeout_ms = @lock_timeout_ms;
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
