/*
Purpose
    Provision the demo tables for archival (what a DBA does per TableConfig
    in production, see docs/sqlserver.md) and fill the demo data.
Parameters (sqlcmd -v)
    ArchiveDb, NamespacePrefix
Safety notes
    DEMO ONLY. Idempotent for the provisioning; the generators refill the
    demo tables. Children before parents does not matter here: the contract
    guard is resolved from the registry at run time.
*/
SET NOCOUNT ON;
GO
USE [$(ArchiveDb)];
GO
EXEC archival_admin.usp_provision_table
    @source_alias = N'SourceDB1', @source_database = N'SourceDB1', @schema_name = N'dbo', @table_name = N'Position',
    @archival_logic = 'CONTRACT_MATURITY', @archive_schema = N'$(NamespacePrefix)sourcedb1',
    @contract_table = N'Contract', @contract_key_column = N'contractId',
    @contract_reference_column = N'contractId', @contract_maturity_column = N'maturityDate',
    @hold_contract_column = N'contractId';
GO
EXEC archival_admin.usp_provision_table
    @source_alias = N'SourceDB1', @source_database = N'SourceDB1', @schema_name = N'dbo', @table_name = N'Contract',
    @archival_logic = 'DATE_BASED', @archive_schema = N'$(NamespacePrefix)sourcedb1',
    @date_column = N'maturityDate', @hold_contract_column = N'contractId';
GO
EXEC archival_admin.usp_provision_table
    @source_alias = N'SourceDB2', @source_database = N'SourceDB2', @schema_name = N'dbo', @table_name = N'Trade',
    @archival_logic = 'DATE_BASED', @archive_schema = N'$(NamespacePrefix)sourcedb2',
    @date_column = N'settlementDate', @hold_contract_column = N'contractId';
GO
EXEC archival_admin.usp_provision_table
    @source_alias = N'SourceDB2', @source_database = N'SourceDB2', @schema_name = N'dbo', @table_name = N'Contract',
    @archival_logic = 'DATE_BASED', @archive_schema = N'$(NamespacePrefix)sourcedb2',
    @date_column = N'maturityDate', @hold_contract_column = N'contractId';
GO
EXEC archival_admin.usp_provision_table
    @source_alias = N'SourceDB3', @source_database = N'SourceDB3', @schema_name = N'dbo', @table_name = N'PriceHistory',
    @archival_logic = 'DATE_BASED', @archive_schema = N'$(NamespacePrefix)sourcedb3', @date_column = N'asOfDate';
GO
EXEC SourceDB1.dbo.usp_generate_demo @contracts = 20000, @rows = 100000;
GO
EXEC SourceDB2.dbo.usp_generate_demo @contracts = 2000, @rows = 50000;
GO
EXEC SourceDB3.dbo.usp_generate_demo @instruments = 100, @rows = 50000;
GO
