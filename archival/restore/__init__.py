"""Restore: archived rows back to their source, requested, approved, executed and certified.

``requests`` (create, preview, approve, reject), ``executor`` (execute or
resume an approved request), ``workers`` (the same on django-q2). The move
of one batch is ``same_server`` (one archive transaction) or ``streaming``
(copy into the source, then delete from the archive). See docs/restore.md.
"""
