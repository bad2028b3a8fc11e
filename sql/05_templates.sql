/*
Purpose
    The dynamic SQL templates of the archival procedures, stored in
    archival.sql_template. The procedures fill the {TOKENS} with fragments
    built from the live catalog (archival.usp_build_sql); the Python dry run
    (manage.py mssql_sql) reads THIS file and fills the same tokens the same
    way, so what a DBA reviews here is what runs.
      mark_table      eligible rows, rows without a reference date, key bounds
                      ({MARK_CHILD_GUARD}: a parent row counts when every
                      child row referencing it will move in this run)
      archive_batch   one keyset batch: pick, conflict check, DELETE ... OUTPUT
                      deleted.<columns> INTO the archive, counts
      dispose_batch   one keyset batch of archive rows past retention, minus
                      rows under an active hold, deleted
      restore_compare the selected archive rows whose key is in the source:
                      how many with other values (conflicts), how many
                      identical (a restore preview on SQL Server)
      restore_batch   one keyset batch of selected archive rows back into the
                      source: pick ({SELECTION}, filled by
                      archival.usp_restore_batch), conflict check, held rows
                      counted, INSERT into the source (explicit columns,
                      IDENTITY_INSERT when needed), the restored keys
                      recorded (RestoredKey), DELETE from the archive
Parameters
    None at install. At run time the templates' @parameters are passed by
    the procedures through sp_executesql (values never enter the text).
Safety notes
    Idempotent (MERGE by name). Every token is replaced by QUOTENAME'd
    identifiers read from the catalog, or by the empty string; no token ever
    carries a value. Quotes inside a template body are doubled.
    The batch pickers end in OPTION (RECOMPILE): their "@key_after IS NULL
    OR keyset" test would otherwise be compiled once for both the first
    batch (a scan from the start) and the next ones (a seek), and a plan
    cached for one is wrong for the other.
*/
SET NOCOUNT ON;
GO
USE [$(ArchiveDb)];
GO

CREATE OR ALTER PROCEDURE archival_admin.usp_set_template
    @name sysname,
    @body nvarchar(max)
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    MERGE archival.sql_template AS t
    USING (SELECT @name AS template_name, @body AS body) AS s
        ON t.template_name = s.template_name
    WHEN MATCHED AND t.body <> s.body THEN
        UPDATE SET body = s.body, installed_at = SYSUTCDATETIME()
    WHEN NOT MATCHED THEN
        INSERT (template_name, body) VALUES (s.template_name, s.body);
END;
GO

EXEC archival_admin.usp_set_template @name = N'mark_table', @body = N'
SELECT @eligible = COUNT_BIG(*)
FROM {SOURCE} AS s
{REFERENCE_JOIN}
WHERE {REFERENCE_COLUMN} < @threshold{MARK_CHILD_GUARD};

SELECT @null_dates = COUNT_BIG(*)
FROM {SOURCE} AS s
{REFERENCE_JOIN}
WHERE {REFERENCE_COLUMN} IS NULL;

SELECT TOP (1) @key_low = {KEY_JSON_S}
FROM {SOURCE} AS s
{REFERENCE_JOIN}
WHERE {REFERENCE_COLUMN} < @threshold{MARK_CHILD_GUARD}
ORDER BY {KEY_COLUMNS_S};

SELECT TOP (1) @key_high = {KEY_JSON_S}
FROM {SOURCE} AS s
{REFERENCE_JOIN}
WHERE {REFERENCE_COLUMN} < @threshold{MARK_CHILD_GUARD}
ORDER BY {KEY_COLUMNS_S_DESC};
';
GO

EXEC archival_admin.usp_set_template @name = N'archive_batch', @body = N'
{CURSOR_DECLARE}
CREATE TABLE #batch (
    {KEY_DEFS},
    reference_date date NULL,
    already_archived bit NOT NULL DEFAULT 0,
    PRIMARY KEY ({KEY_COLUMNS})
);

-- The batch: the next @batch_size eligible keys after the cursor, in key
-- order, locked (UPDLOCK) until the transaction ends so the rows deleted
-- below are the rows picked here.
WITH eligible AS (
    SELECT TOP (@batch_size) {KEY_COLUMNS_S}, CAST({REFERENCE_COLUMN} AS date) AS reference_date
    FROM {SOURCE} AS s WITH (UPDLOCK, ROWLOCK)
    {REFERENCE_JOIN}
    WHERE {REFERENCE_COLUMN} < @threshold
        AND (@key_after IS NULL OR ({KEYSET_S})){CHILD_GUARD}
    ORDER BY {KEY_COLUMNS_S}
)
INSERT INTO #batch ({KEY_COLUMNS}, reference_date)
SELECT {KEY_COLUMNS}, reference_date FROM eligible
OPTION (RECOMPILE);
SET @batch_rows = @@ROWCOUNT;

-- A key already in the archive: identical values are skipped (deleted from
-- the source only); different values stop the table (never overwritten).
UPDATE b SET already_archived = 1
FROM #batch AS b
INNER JOIN {ARCHIVE} AS a ON {KEY_JOIN_A_B};

SELECT @conflicts = COUNT(*)
FROM #batch AS b
INNER JOIN {SOURCE} AS s ON {KEY_JOIN_S_B}
INNER JOIN {ARCHIVE} AS a ON {KEY_JOIN_A_B}
WHERE NOT EXISTS (SELECT {COMPARE_S} INTERSECT SELECT {COMPARE_A});
IF @conflicts > 0 RETURN;

DELETE s
OUTPUT {COLUMNS_DELETED}, @archived_at, @run_id, b.reference_date, DATEADD(YEAR, @years_retention, b.reference_date)
INTO {ARCHIVE} ({COLUMNS}, [archived_at], [archive_run_id], [reference_date], [retention_until])
FROM {SOURCE} AS s
INNER JOIN #batch AS b ON {KEY_JOIN_S_B}
WHERE b.already_archived = 0;
SET @rows_moved = @@ROWCOUNT;

DELETE s
FROM {SOURCE} AS s
INNER JOIN #batch AS b ON {KEY_JOIN_S_B}
WHERE b.already_archived = 1;
SET @rows_skipped = @@ROWCOUNT;

SELECT @rows_archived = COUNT(*)
FROM {ARCHIVE} AS a
INNER JOIN #batch AS b ON {KEY_JOIN_A_B}
WHERE b.already_archived = 0 AND a.[archive_run_id] = @run_id;

SELECT TOP (1) @key_high = {KEY_JSON_B}
FROM #batch AS b
ORDER BY {KEY_COLUMNS_B_DESC};
';
GO

EXEC archival_admin.usp_set_template @name = N'dispose_batch', @body = N'
{CURSOR_DECLARE}
CREATE TABLE #candidate (
    {KEY_DEFS},
    held bit NOT NULL DEFAULT 0,
    PRIMARY KEY ({KEY_COLUMNS})
);

WITH due AS (
    SELECT TOP (@batch_size) {KEY_COLUMNS_A}
    FROM {ARCHIVE} AS a WITH (UPDLOCK, ROWLOCK)
    WHERE a.[retention_until] < @as_of
        AND (@key_after IS NULL OR ({KEYSET_A}))
    ORDER BY {KEY_COLUMNS_A}
)
INSERT INTO #candidate ({KEY_COLUMNS})
SELECT {KEY_COLUMNS} FROM due
OPTION (RECOMPILE);
SET @batch_rows = @@ROWCOUNT;

-- The hold re-check, in the disposal transaction, after the hold applock:
-- mirrors governance.models.archive.Hold/HoldKey, Hold.objects.active() and
-- archival.disposal.tables.DisposalTable.hold_match_sql (an empty hold
-- schema names the table in any schema; a date range never covers a row
-- without a reference date). Text compares in the collation of the archive
-- database (COLLATE DATABASE_DEFAULT), where the hold rows live: with a
-- case-insensitive archive a KEYS hold on key abc also keeps key ABC (more is
-- kept, never less).
UPDATE b SET held = 1
FROM #candidate AS b
INNER JOIN {ARCHIVE} AS a ON {KEY_JOIN_A_B}
WHERE EXISTS (
    SELECT 1
    FROM [dbo].[governance_hold] AS h
    WHERE h.[released_at] IS NULL
        AND (h.[hold_until] IS NULL OR h.[hold_until] >= @as_of)
        AND (
            h.[scope] = N''ALL''
            OR (h.[scope] = N''TABLE'' AND h.[source_db] = @source_alias
                AND (h.[schema_name] = @schema_name OR h.[schema_name] = N'''') AND h.[table_name] = @table_name)
            OR (h.[scope] = N''DATE_RANGE'' AND a.[reference_date] IS NOT NULL
                AND (h.[date_from] IS NULL OR a.[reference_date] >= h.[date_from])
                AND (h.[date_to] IS NULL OR a.[reference_date] <= h.[date_to]))
            OR (h.[scope] = N''KEYS'' AND h.[source_db] = @source_alias
                AND (h.[schema_name] = @schema_name OR h.[schema_name] = N'''') AND h.[table_name] = @table_name
                AND EXISTS (
                    SELECT 1 FROM [dbo].[governance_holdkey] AS k
                    WHERE k.[hold_id] = h.[id] AND k.[key_text] = {KEY_TEXT_A}
                )){HOLD_CONTRACT_MATCH}
        )
);
SELECT @rows_held = COUNT(*) FROM #candidate WHERE held = 1;

DELETE a
FROM {ARCHIVE} AS a
INNER JOIN #candidate AS b ON {KEY_JOIN_A_B}
WHERE b.held = 0;
SET @rows_disposed = @@ROWCOUNT;

SELECT TOP (1) @key_high = {KEY_JSON_B}
FROM #candidate AS b
ORDER BY {KEY_COLUMNS_B_DESC};
';
GO

EXEC archival_admin.usp_set_template @name = N'restore_batch', @body = N'
{CURSOR_DECLARE}
{SELECTION_DECLARE}
CREATE TABLE #batch (
    {KEY_DEFS},
    in_source bit NOT NULL DEFAULT 0,
    held bit NOT NULL DEFAULT 0,
    PRIMARY KEY ({KEY_COLUMNS})
);

-- The batch: the next @batch_size selected archive rows after the cursor, in
-- key order, locked (UPDLOCK) until the transaction ends so the rows copied
-- and deleted below are the rows picked here. {SELECTION} reads its values
-- from the @selection parameter (archival.usp_build_restore_selection).
WITH selected AS (
    SELECT TOP (@batch_size) {KEY_COLUMNS_A}
    FROM {ARCHIVE} AS a WITH (UPDLOCK, ROWLOCK)
    WHERE ({SELECTION})
        AND (@key_after IS NULL OR ({KEYSET_A}))
    ORDER BY {KEY_COLUMNS_A}
)
INSERT INTO #batch ({KEY_COLUMNS})
SELECT {KEY_COLUMNS} FROM selected
OPTION (RECOMPILE);
SET @batch_rows = @@ROWCOUNT;

-- A key already in the source (locked, with its range, until the commit, so
-- no insert slips in between): identical values (the columns the source
-- stores: not computed, not rowversion) are skipped, their archive copy is
-- deleted; other values stop the table with nothing of the batch moved.
UPDATE b SET in_source = 1
FROM #batch AS b
INNER JOIN {SOURCE} AS s WITH (UPDLOCK, HOLDLOCK) ON {KEY_JOIN_S_B};

SELECT @conflicts = COUNT(*)
FROM #batch AS b
INNER JOIN {SOURCE} AS s ON {KEY_JOIN_S_B}
INNER JOIN {ARCHIVE} AS a ON {KEY_JOIN_A_B}
WHERE NOT EXISTS (SELECT {RESTORE_COMPARE_S} INTERSECT SELECT {RESTORE_COMPARE_A});
IF @conflicts > 0
BEGIN
    SELECT TOP (1) @conflict_key = {KEY_JSON_B}
    FROM #batch AS b
    INNER JOIN {SOURCE} AS s ON {KEY_JOIN_S_B}
    INNER JOIN {ARCHIVE} AS a ON {KEY_JOIN_A_B}
    WHERE NOT EXISTS (SELECT {RESTORE_COMPARE_S} INTERSECT SELECT {RESTORE_COMPARE_A})
    ORDER BY {KEY_COLUMNS_B};
    RETURN;
END;

-- Restoring held rows is allowed (nothing is destroyed) and recorded: the
-- rows an active hold covers, by the hold match of dispose_batch.
UPDATE b SET held = 1
FROM #batch AS b
INNER JOIN {ARCHIVE} AS a ON {KEY_JOIN_A_B}
WHERE EXISTS (
    SELECT 1
    FROM [dbo].[governance_hold] AS h
    WHERE h.[released_at] IS NULL
        AND (h.[hold_until] IS NULL OR h.[hold_until] >= @as_of)
        AND (
            h.[scope] = N''ALL''
            OR (h.[scope] = N''TABLE'' AND h.[source_db] = @source_alias
                AND (h.[schema_name] = @schema_name OR h.[schema_name] = N'''') AND h.[table_name] = @table_name)
            OR (h.[scope] = N''DATE_RANGE'' AND a.[reference_date] IS NOT NULL
                AND (h.[date_from] IS NULL OR a.[reference_date] >= h.[date_from])
                AND (h.[date_to] IS NULL OR a.[reference_date] <= h.[date_to]))
            OR (h.[scope] = N''KEYS'' AND h.[source_db] = @source_alias
                AND (h.[schema_name] = @schema_name OR h.[schema_name] = N'''') AND h.[table_name] = @table_name
                AND EXISTS (
                    SELECT 1 FROM [dbo].[governance_holdkey] AS k
                    WHERE k.[hold_id] = h.[id] AND k.[key_text] = {KEY_TEXT_A}
                )){HOLD_CONTRACT_MATCH}
        )
);

-- Back into the source with an explicit column list: no computed and no
-- rowversion column (neither can be inserted into); an identity column keeps
-- its archived value under IDENTITY_INSERT. Not DELETE ... OUTPUT INTO the
-- source: an OUTPUT INTO target may have no enabled trigger, no foreign key
-- and no CHECK constraint, which a source table may well have.
{IDENTITY_INSERT_ON}
INSERT INTO {SOURCE} ({INSERT_COLUMNS})
SELECT {INSERT_COLUMNS_A}
FROM {ARCHIVE} AS a
INNER JOIN #batch AS b ON {KEY_JOIN_A_B}
WHERE b.in_source = 0;
SET @rows_restored = @@ROWCOUNT;
{IDENTITY_INSERT_OFF}

-- The record of what came back (RestoredKey: the digest of the restore
-- certificate is computed over these keys), written before the rows leave the
-- archive; a replayed batch fails on its unique key instead of counting twice.
INSERT INTO [dbo].[governance_restoredkey] ([request_id], [config_id], [batch_no], [key_text])
SELECT @request_id, @config_id, @batch_no, {KEY_TEXT_A}
FROM {ARCHIVE} AS a
INNER JOIN #batch AS b ON {KEY_JOIN_A_B};
SET @rows_recorded = @@ROWCOUNT;

DELETE a
FROM {ARCHIVE} AS a
INNER JOIN #batch AS b ON {KEY_JOIN_A_B};
SET @rows_deleted = @@ROWCOUNT;

SELECT @rows_skipped = COUNT(*) FROM #batch WHERE in_source = 1;
SELECT @rows_held = COUNT(*) FROM #batch WHERE held = 1;
SELECT @rows_in_source = COUNT(*)
FROM {SOURCE} AS s
INNER JOIN #batch AS b ON {KEY_JOIN_S_B};

SELECT TOP (1) @key_high = {KEY_JSON_B}
FROM #batch AS b
ORDER BY {KEY_COLUMNS_B_DESC};
';
GO

EXEC archival_admin.usp_set_template @name = N'restore_compare', @body = N'
{SELECTION_DECLARE}
-- The columns a restore writes (not computed, not rowversion) decide:
-- identical rows are skipped by the batch, others stop the table.
SELECT @conflicts = COUNT_BIG(*)
FROM {ARCHIVE} AS a
INNER JOIN {SOURCE} AS s ON {KEY_JOIN_S_A}
WHERE ({SELECTION})
    AND NOT EXISTS (SELECT {RESTORE_COMPARE_S} INTERSECT SELECT {RESTORE_COMPARE_A})
OPTION (RECOMPILE);

SELECT @identical = COUNT_BIG(*)
FROM {ARCHIVE} AS a
INNER JOIN {SOURCE} AS s ON {KEY_JOIN_S_A}
WHERE ({SELECTION})
    AND EXISTS (SELECT {RESTORE_COMPARE_S} INTERSECT SELECT {RESTORE_COMPARE_A})
OPTION (RECOMPILE);
';
GO
