/*
Purpose
    Helper functions that turn catalog facts into SQL fragments for the
    dynamic SQL of the archival procedures. Each one has a Python twin in
    archival/backends/mssql.py (same output, character for character) so the
    dry run (manage.py mssql_sql) prints what the server would build.
      archival.fn_type_sql          declared type text from sys.types facts
      archival.fn_column_list       [a], [b] / s.[a], s.[b] from a JSON array of names
      archival.fn_key_join          l.[a] = r.[a] AND ...
      archival.fn_keyset_predicate  expanded OR keyset predicate on @k1..@kn
      archival.fn_key_bound         expanded OR inclusive bound (>= or <=) on
                                    @<prefix>1..n (restore key ranges)
      archival.fn_key_json          expression giving a key as a JSON array of strings
      archival.fn_key_text          expression giving a key in HoldKey.key_text form
                                    (archival.rowkeys canonical text)
Parameters
    @columns: JSON array of column names in key (or column) order; every name
    has been read from the live catalog by the caller, never from a config.
    @alias: a table alias chosen by the procedure (constant), e.g. N's'.
Safety notes
    Every identifier goes through QUOTENAME. The functions only build text;
    they read no table. Idempotent (CREATE OR ALTER).
*/
SET NOCOUNT ON;
GO
USE [$(ArchiveDb)];
GO

CREATE OR ALTER FUNCTION archival.fn_type_sql(
    @type_name sysname, @max_length smallint, @precision tinyint, @scale tinyint
)
RETURNS nvarchar(200)
AS
BEGIN
    -- NULL for types the archive does not copy (text, ntext, image, xml,
    -- user CLR and alias types): callers refuse the table with a clear error.
    -- rowversion (sys.types calls it timestamp) cannot be inserted into: its
    -- value is archived as binary(8). sql_variant, hierarchyid, geography and
    -- geometry are archived as themselves (the identical-values check compares
    -- geography and geometry by their bytes, see archival.usp_build_sql).
    RETURN CASE
        WHEN @type_name = N'timestamp' THEN N'binary(8)'
        WHEN @type_name IN (N'sql_variant', N'hierarchyid', N'geography', N'geometry') THEN @type_name
        WHEN @type_name IN (N'char', N'varchar', N'binary', N'varbinary')
            THEN @type_name + N'(' + CASE WHEN @max_length = -1 THEN N'max' ELSE CONVERT(nvarchar(10), @max_length) END + N')'
        WHEN @type_name IN (N'nchar', N'nvarchar')
            THEN @type_name + N'(' + CASE WHEN @max_length = -1 THEN N'max' ELSE CONVERT(nvarchar(10), @max_length / 2) END + N')'
        WHEN @type_name IN (N'decimal', N'numeric')
            THEN @type_name + N'(' + CONVERT(nvarchar(10), @precision) + N',' + CONVERT(nvarchar(10), @scale) + N')'
        WHEN @type_name IN (N'datetime2', N'time', N'datetimeoffset')
            THEN @type_name + N'(' + CONVERT(nvarchar(10), @scale) + N')'
        WHEN @type_name IN (
            N'bigint', N'int', N'smallint', N'tinyint', N'bit', N'float', N'real', N'money',
            N'smallmoney', N'date', N'datetime', N'smalldatetime', N'uniqueidentifier'
        )
            THEN @type_name
    END;
END;
GO

CREATE OR ALTER FUNCTION archival.fn_column_list(@columns nvarchar(max), @prefix nvarchar(20))
RETURNS nvarchar(max)
AS
BEGIN
    RETURN (
        SELECT STRING_AGG(CONVERT(nvarchar(max), @prefix + QUOTENAME(j.value)), N', ')
            WITHIN GROUP (ORDER BY CONVERT(int, j.[key]))
        FROM OPENJSON(@columns) AS j
    );
END;
GO

CREATE OR ALTER FUNCTION archival.fn_key_join(@columns nvarchar(max), @left sysname, @right sysname)
RETURNS nvarchar(max)
AS
BEGIN
    RETURN (
        SELECT STRING_AGG(
            CONVERT(nvarchar(max), @left + N'.' + QUOTENAME(j.value) + N' = ' + @right + N'.' + QUOTENAME(j.value)),
            N' AND '
        ) WITHIN GROUP (ORDER BY CONVERT(int, j.[key]))
        FROM OPENJSON(@columns) AS j
    );
END;
GO

-- a > @k1 OR (a = @k1 AND (b > @k2 OR (b = @k2 AND (c > @k3)))): SQL Server
-- has no row-value comparison, and this form seeks on the clustered key.
CREATE OR ALTER FUNCTION archival.fn_keyset_predicate(@columns nvarchar(max), @alias sysname)
RETURNS nvarchar(max)
AS
BEGIN
    DECLARE @i int = (SELECT COUNT(*) FROM OPENJSON(@columns));
    DECLARE @predicate nvarchar(max) = NULL;
    DECLARE @column nvarchar(300);
    DECLARE @param nvarchar(20);
    WHILE @i >= 1
    BEGIN
        SELECT @column = @alias + N'.' + QUOTENAME(j.value)
        FROM OPENJSON(@columns) AS j
        WHERE j.[key] = CONVERT(nvarchar(10), @i - 1);
        SET @param = N'@k' + CONVERT(nvarchar(10), @i);
        SET @predicate = CASE
            WHEN @predicate IS NULL THEN @column + N' > ' + @param
            ELSE @column + N' > ' + @param + N' OR (' + @column + N' = ' + @param + N' AND (' + @predicate + N'))'
        END;
        SET @i = @i - 1;
    END;
    RETURN @predicate;
END;
GO

-- The inclusive form of the keyset predicate, for a restore KEY_RANGE:
-- @op N'>' gives key >= (@p1, @p2, ...), N'<' gives key <= (...):
-- a > @p1 OR (a = @p1 AND (b >= @p2)). @variable_prefix names the variables
-- (N'@s0_lo' -> @s0_lo1, @s0_lo2, ...); it is a constant of the caller.
CREATE OR ALTER FUNCTION archival.fn_key_bound(
    @columns nvarchar(max), @alias sysname, @op nchar(1), @variable_prefix nvarchar(20)
)
RETURNS nvarchar(max)
AS
BEGIN
    DECLARE @i int = (SELECT COUNT(*) FROM OPENJSON(@columns));
    DECLARE @predicate nvarchar(max) = NULL;
    DECLARE @column nvarchar(300);
    DECLARE @variable nvarchar(40);
    IF @op NOT IN (N'>', N'<')
        RETURN NULL;
    WHILE @i >= 1
    BEGIN
        SELECT @column = @alias + N'.' + QUOTENAME(j.value)
        FROM OPENJSON(@columns) AS j
        WHERE j.[key] = CONVERT(nvarchar(10), @i - 1);
        SET @variable = @variable_prefix + CONVERT(nvarchar(10), @i);
        SET @predicate = CASE
            WHEN @predicate IS NULL THEN @column + N' ' + @op + N'= ' + @variable
            ELSE @column + N' ' + @op + N' ' + @variable + N' OR (' + @column + N' = ' + @variable + N' AND (' + @predicate + N'))'
        END;
        SET @i = @i - 1;
    END;
    RETURN @predicate;
END;
GO

-- Keys travel as JSON arrays of strings (dates ISO 8601 through style 126)
-- in the OUTPUT parameters and the ledger.
CREATE OR ALTER FUNCTION archival.fn_key_json(@columns nvarchar(max), @alias sysname)
RETURNS nvarchar(max)
AS
BEGIN
    RETURN N'N''['' + ' + (
        SELECT STRING_AGG(
            CONVERT(
                nvarchar(max),
                N'N''"'' + STRING_ESCAPE(CONVERT(nvarchar(4000), ' + @alias + N'.' + QUOTENAME(j.value)
                + N', 126), ''json'') + N''"'''
            ),
            N' + N'','' + '
        ) WITHIN GROUP (ORDER BY CONVERT(int, j.[key]))
        FROM OPENJSON(@columns) AS j
    ) + N' + N'']''';
END;
GO

-- HoldKey.key_text (archival.rowkeys): key components in key order
-- joined by a tab; integers and decimals as text, dates YYYY-MM-DD,
-- timestamps YYYY-MM-DD HH:MM:SS[.ffffff], bit true/false, binary as
-- lower-case hex, uniqueidentifier in lower case, text with backslash, tab
-- and newline escaped. @types: JSON array of the columns' sys.types names,
-- in the same order. Each part is in the archive database's collation
-- (COLLATE DATABASE_DEFAULT), where HoldKey lives: two key columns of
-- different collations, or one differing from the archive's, would
-- otherwise conflict (error 468).
CREATE OR ALTER FUNCTION archival.fn_key_text(@columns nvarchar(max), @types nvarchar(max), @alias sysname)
RETURNS nvarchar(max)
AS
BEGIN
    DECLARE @parts nvarchar(max) = (
        SELECT STRING_AGG(CONVERT(nvarchar(max), CASE
            WHEN t.value IN (N'char', N'varchar', N'nchar', N'nvarchar')
                THEN N'REPLACE(REPLACE(REPLACE(CONVERT(nvarchar(4000), ' + @alias + N'.' + QUOTENAME(j.value)
                    + N'), N''\'', N''\\''), NCHAR(9), N''\t''), NCHAR(10), N''\n'')'
            WHEN t.value = N'date'
                THEN N'CONVERT(nvarchar(10), ' + @alias + N'.' + QUOTENAME(j.value) + N', 23)'
            WHEN t.value IN (N'datetime', N'datetime2', N'smalldatetime')
                THEN N'CONVERT(nvarchar(19), ' + @alias + N'.' + QUOTENAME(j.value) + N', 120) + CASE WHEN DATEPART(MICROSECOND, '
                    + @alias + N'.' + QUOTENAME(j.value) + N') = 0 THEN N'''' ELSE N''.'' + RIGHT(N''000000'' + CONVERT(nvarchar(6), DATEPART(MICROSECOND, '
                    + @alias + N'.' + QUOTENAME(j.value) + N')), 6) END'
            WHEN t.value = N'bit'
                THEN N'CASE WHEN ' + @alias + N'.' + QUOTENAME(j.value) + N' = 1 THEN N''true'' ELSE N''false'' END'
            WHEN t.value = N'uniqueidentifier'
                THEN N'LOWER(CONVERT(nvarchar(36), ' + @alias + N'.' + QUOTENAME(j.value) + N'))'
            WHEN t.value IN (N'binary', N'varbinary')
                THEN N'LOWER(CONVERT(nvarchar(max), ' + @alias + N'.' + QUOTENAME(j.value) + N', 2))'
            ELSE N'CONVERT(nvarchar(4000), ' + @alias + N'.' + QUOTENAME(j.value) + N')'
        END + N' COLLATE DATABASE_DEFAULT'), N', ') WITHIN GROUP (ORDER BY CONVERT(int, j.[key]))
        FROM OPENJSON(@columns) AS j
        INNER JOIN OPENJSON(@types) AS t ON t.[key] = j.[key]
    );
    RETURN CASE
        WHEN (SELECT COUNT(*) FROM OPENJSON(@columns)) = 1 THEN @parts
        ELSE N'CONCAT_WS(NCHAR(9), ' + @parts + N')'
    END;
END;
GO
