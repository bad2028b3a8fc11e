/*
Purpose
    Demo source databases matching archival/demo.py: SourceDB1 (Position
    keyed by basketId, positionId, businessDate, referencing Contract with
    maturityDate), SourceDB2 (Trade with tradeDate/settlementDate, Contract),
    SourceDB3 (PriceHistory keyed by instrumentId, asOfDate), plus the data
    generator dbo.usp_generate_demo in each.
Parameters
    None (demo names fixed: SourceDB1..3). Generate data with e.g.
    EXEC SourceDB1.dbo.usp_generate_demo @contracts = 20000, @rows = 1000000;
Safety notes
    DEMO ONLY: never run on a production instance. Idempotent (creates only
    what is missing); the generator deletes and refills the demo tables.
*/
SET NOCOUNT ON;
GO
IF DB_ID(N'SourceDB1') IS NULL EXEC (N'CREATE DATABASE [SourceDB1]');
GO
IF DB_ID(N'SourceDB2') IS NULL EXEC (N'CREATE DATABASE [SourceDB2]');
GO
IF DB_ID(N'SourceDB3') IS NULL EXEC (N'CREATE DATABASE [SourceDB3]');
GO

USE [SourceDB1];
GO
IF OBJECT_ID(N'dbo.Contract', N'U') IS NULL
    CREATE TABLE dbo.Contract (
        contractId int NOT NULL CONSTRAINT pk_contract PRIMARY KEY,
        contractRef varchar(40) NULL,
        counterparty varchar(40) NULL,
        maturityDate date NULL,
        notional decimal(18, 2) NULL
    );
GO
IF OBJECT_ID(N'dbo.Position', N'U') IS NULL
    CREATE TABLE dbo.Position (
        basketId int NOT NULL,
        positionId int NOT NULL,
        businessDate date NOT NULL,
        contractId int NOT NULL CONSTRAINT fk_position_contract REFERENCES dbo.Contract (contractId),
        quantity decimal(18, 4) NOT NULL,
        price decimal(18, 6) NOT NULL,
        marketValue decimal(20, 4) NOT NULL,
        currency char(3) NOT NULL,
        book varchar(40) NOT NULL,
        trader varchar(40) NULL,
        updatedAt datetime2(3) NOT NULL,
        CONSTRAINT pk_position PRIMARY KEY CLUSTERED (basketId, positionId, businessDate)
    );
GO
IF NOT EXISTS (SELECT 1 FROM sys.indexes WHERE name = N'ix_position_contract')
    CREATE INDEX ix_position_contract ON dbo.Position (contractId);
GO
CREATE OR ALTER PROCEDURE dbo.usp_generate_demo
    @contracts int = 20000,
    @rows int = 100000
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    DELETE FROM dbo.Position;
    DELETE FROM dbo.Contract;
    WITH n AS (
        SELECT TOP (@contracts) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS i
        FROM sys.all_columns AS a CROSS JOIN sys.all_columns AS b
    )
    INSERT INTO dbo.Contract (contractId, contractRef, counterparty, notional, maturityDate)
    SELECT i, CONCAT('C-', i), CONCAT('CP', i % 300), (i % 1000) * 1000.0,
        CASE WHEN i % 97 = 0 THEN NULL ELSE DATEADD(DAY, -(i % 3650), CONVERT(date, '20260101')) END
    FROM n;
    WITH n AS (
        SELECT TOP (@rows) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS i
        FROM sys.all_columns AS a CROSS JOIN sys.all_columns AS b
    )
    INSERT INTO dbo.Position (
        basketId, positionId, businessDate, contractId, quantity, price, marketValue, currency, book, trader, updatedAt
    )
    SELECT i / 1000, i % 1000, DATEADD(DAY, -(i % 1500), CONVERT(date, '20260101')), 1 + i % @contracts,
        i % 500, 100 + (i % 97) / 7.0, (i % 500) * (100 + (i % 97) / 7.0), N'EUR', CONCAT(N'BOOK', i % 40),
        CASE WHEN i % 11 = 0 THEN NULL ELSE CONCAT(N'trader', i % 60) END, SYSUTCDATETIME()
    FROM n;
    COMMIT TRANSACTION;
END;
GO

USE [SourceDB2];
GO
IF OBJECT_ID(N'dbo.Contract', N'U') IS NULL
    CREATE TABLE dbo.Contract (
        contractId int NOT NULL CONSTRAINT pk_contract PRIMARY KEY,
        contractRef varchar(40) NULL,
        counterparty varchar(40) NULL,
        maturityDate date NULL,
        notional decimal(18, 2) NULL
    );
GO
IF OBJECT_ID(N'dbo.Trade', N'U') IS NULL
    CREATE TABLE dbo.Trade (
        tradeId bigint NOT NULL CONSTRAINT pk_trade PRIMARY KEY,
        contractId int NOT NULL CONSTRAINT fk_trade_contract REFERENCES dbo.Contract (contractId),
        tradeDate date NOT NULL,
        settlementDate date NULL,
        quantity decimal(18, 4) NULL,
        price decimal(18, 6) NULL,
        side char(1) NULL,
        counterparty varchar(40) NULL
    );
GO
CREATE OR ALTER PROCEDURE dbo.usp_generate_demo
    @contracts int = 2000,
    @rows int = 50000
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    DELETE FROM dbo.Trade;
    DELETE FROM dbo.Contract;
    WITH n AS (
        SELECT TOP (@contracts) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS i
        FROM sys.all_columns AS a CROSS JOIN sys.all_columns AS b
    )
    INSERT INTO dbo.Contract (contractId, contractRef, counterparty, maturityDate)
    SELECT i, CONCAT('C-', i), CONCAT('CP', i % 300), DATEADD(DAY, -(i % 3000), CONVERT(date, '20260101'))
    FROM n;
    WITH n AS (
        SELECT TOP (@rows) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS i
        FROM sys.all_columns AS a CROSS JOIN sys.all_columns AS b
    )
    INSERT INTO dbo.Trade (tradeId, contractId, tradeDate, settlementDate, quantity, price, side, counterparty)
    SELECT i, 1 + i % @contracts, DATEADD(DAY, -(i % 2000), CONVERT(date, '20260101')),
        CASE WHEN i % 13 = 0 THEN NULL ELSE DATEADD(DAY, 2 - (i % 2000), CONVERT(date, '20260101')) END,
        i % 1000, 100 + (i % 97) / 7.0, CASE WHEN i % 2 = 0 THEN 'B' ELSE 'S' END, CONCAT('CP', i % 300)
    FROM n;
    COMMIT TRANSACTION;
END;
GO

USE [SourceDB3];
GO
IF OBJECT_ID(N'dbo.PriceHistory', N'U') IS NULL
    CREATE TABLE dbo.PriceHistory (
        instrumentId int NOT NULL,
        asOfDate date NOT NULL,
        closePrice decimal(18, 6) NULL,
        volume bigint NULL,
        CONSTRAINT pk_pricehistory PRIMARY KEY CLUSTERED (instrumentId, asOfDate)
    );
GO
CREATE OR ALTER PROCEDURE dbo.usp_generate_demo
    @instruments int = 100,
    @rows int = 50000
AS
BEGIN
    SET NOCOUNT ON;
    SET XACT_ABORT ON;
    BEGIN TRANSACTION;
    DELETE FROM dbo.PriceHistory;
    WITH n AS (
        SELECT TOP (@rows) ROW_NUMBER() OVER (ORDER BY (SELECT NULL)) AS i
        FROM sys.all_columns AS a CROSS JOIN sys.all_columns AS b
    )
    INSERT INTO dbo.PriceHistory (instrumentId, asOfDate, closePrice, volume)
    SELECT 1 + i % @instruments, DATEADD(DAY, -(i / @instruments), CONVERT(date, '20260101')),
        50 + (i % 1000) / 10.0, i % 100000
    FROM n;
    COMMIT TRANSACTION;
END;
GO
