"""SQL Server 2019: the backend and the calls into the archival procedures.

On SQL Server the per-batch work runs in the stored procedures of ``sql/``
(what a DBA reviews and grants EXECUTE on). The package is split by job:

* ``sqltypes``: quoting and the SQL Server type of a column;
* ``backend``: ``MSSQLBackend``, catalog reads through ``INFORMATION_SCHEMA``
  and ``sys`` views with parameters, and the typed procedure calls;
* ``procedures``: the procedures' signatures and the ``EXEC ... OUTPUT``
  batch that calls them through a cursor (mssql-django has no ``callproc``;
  ``tests/test_mssql_sql.py`` checks the signatures against the T-SQL);
* ``templates``: Python twins of the fragments ``archival.usp_build_sql``
  builds from the catalog, filled into the templates of
  ``sql/05_templates.sql``, so ``manage.py mssql_sql`` prints the dynamic SQL
  the server would run, and the DBA's provisioning call, without a server.

None of this has been executed against SQL Server here (no server runs on
our machines); it is checked by parsing and contract tests.
"""
