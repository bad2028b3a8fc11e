"""Replicas an administrator asks the engine to watch: it pauses while they lag.

Where the engine connects is never stored here as a connection string. A
replica is named by a Django ``DATABASES`` alias (from the deployment's
settings) or by the *name* of an environment variable holding its URL
(``ARCHIVAL_REPLICA_*``): the credentials stay in the deployment's secrets,
not in a table that admins edit and auditors read, and an admin account
cannot make the engine connect to an arbitrary host with arbitrary
credentials (the variable must exist on the worker, set by whoever deploys
it). Measured on the primary (PostgreSQL ``pg_stat_replication``, SQL
Server's availability-group DMVs), the connection is the source database
itself and the replica is named by what the primary calls it.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models

# Environment variables the engine may read a replica's URL from: a prefix
# of their own, so no other secret of the deployment (DATABASE_URL, ...) can
# be named here.
REPLICA_ENV_PREFIX = "ARCHIVAL_REPLICA_"
# Aliases that are never a replica: the control, archive and read-only connections.
NOT_REPLICAS = ("default", "archive", "archive_readonly")


class MeasuredOn(models.TextChoices):
    REPLICA = "REPLICA", "On the replica (connect to it)"
    PRIMARY = "PRIMARY", "On the primary (the source database names the replica)"


class ConnectionKind(models.TextChoices):
    ALIAS = "ALIAS", "Django DATABASES alias"
    ENV = "ENV", "Environment variable holding the URL"


class ReplicaWatchQuerySet(models.QuerySet):
    def active_for(self, source_db: str):
        return self.filter(is_active=True, source_db=source_db)


class ReplicaWatch(models.Model):
    source_db = models.CharField(
        "source database",
        max_length=63,
        help_text="The source database (alias, one of SOURCE_DATABASES) whose replica this is.",
    )
    name = models.CharField(
        max_length=128,
        help_text="The replica's name: shown in status and reasons; measured on the primary, what the primary calls "
        "it (PostgreSQL: application_name in pg_stat_replication; SQL Server: the availability replica's server name).",
    )
    measured_on = models.CharField(
        max_length=8,
        choices=MeasuredOn,
        default=MeasuredOn.REPLICA,
        help_text="Where the lag is read. On the replica: PostgreSQL replay delay, MariaDB Seconds_Behind_Master. "
        "On the primary: PostgreSQL pg_stat_replication, SQL Server sys.dm_hadr_database_replica_states.",
    )
    connection_kind = models.CharField(
        max_length=5,
        choices=ConnectionKind,
        default=ConnectionKind.ENV,
        help_text="How the connection to query is named (never a connection string stored here).",
    )
    connection = models.CharField(
        max_length=128,
        blank=True,
        validators=[RegexValidator(r"^[A-Za-z_][A-Za-z0-9_]*$", "A plain alias or variable name.")],
        help_text=f"A DATABASES alias, or the name of an environment variable ({REPLICA_ENV_PREFIX}…) holding the "
        "replica's URL on every worker. Empty when measured on the primary: the source database's own connection.",
    )
    max_lag_seconds = models.PositiveIntegerField(
        "lag bound (s)",
        default=30,
        validators=[MinValueValidator(0), MaxValueValidator(86_400)],
        help_text="Batches pause while the replica is further behind than this (a broken replication counts as over).",
    )
    max_queue_kb = models.PositiveIntegerField(
        "queue bound (KB)",
        null=True,
        blank=True,
        help_text="Measured on the primary (SQL Server, PostgreSQL): batches also pause while the log not yet "
        "sent or replayed is larger than this. On PostgreSQL the primary's replay_lag stops growing while a "
        "standby's replay stalls: set this bound there (0: any WAL not replayed), or measure on the replica.",
    )
    is_active = models.BooleanField("active", default=True, help_text="Inactive watches are ignored.")
    updated_at = models.DateTimeField(auto_now=True, help_text="Last change.")

    objects = ReplicaWatchQuerySet.as_manager()

    class Meta:
        verbose_name = "watched replica"
        constraints = [
            # One watch per replica name per source: two would pause twice and confuse the reasons.
            models.UniqueConstraint(fields=["source_db", "name"], name="replicawatch_unique_name"),
        ]

    def __str__(self) -> str:
        return f"{self.name} (replica of {self.source_db})"

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.source_db not in settings.SOURCE_DATABASES:
            errors["source_db"] = (
                f"Unknown source database {self.source_db!r}; configured: {', '.join(settings.SOURCE_DATABASES)}."
            )
        if not self.connection:
            if self.measured_on == MeasuredOn.REPLICA:
                errors["connection"] = "Measured on the replica: name the connection to it."
        elif self.connection_kind == ConnectionKind.ALIAS:
            if self.connection not in settings.DATABASES or self.connection in NOT_REPLICAS:
                errors["connection"] = "Not a replica alias of this deployment's DATABASES."
        elif not self.connection.startswith(REPLICA_ENV_PREFIX):
            errors["connection"] = f"The variable's name must start with {REPLICA_ENV_PREFIX}."
        elif not os.environ.get(self.connection):
            # Checked here for the admin's benefit; each worker reads its own
            # environment at run time (a missing variable there is a broken replica).
            errors["connection"] = f"{self.connection} is not set in this process's environment."
        if errors:
            raise ValidationError(errors)
