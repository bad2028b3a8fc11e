"""Table configurations: which source table is archived, how and for how long."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from simple_history.models import HistoricalRecords

from archival.backends import backend_for
from governance.schema import validate_config_against_schema

ARCHIVE_ALIAS = "archive"  # the archive database's connection alias

# Identifiers are further validated against the live schema (governance.schema);
# this syntactic check only keeps obvious junk out early with a clear message.
identifier_validator = RegexValidator(
    r"^[A-Za-z_][A-Za-z0-9_ $#@-]{0,127}$",
    "Must be a plain identifier (letters, digits, underscore); it is checked against the live schema.",
)


class TableType(models.TextChoices):
    FUNCTIONAL = "FUNCTIONAL", "Functional"
    REFERENCE = "REFERENCE", "Reference"
    OPERATIONAL = "OPERATIONAL", "Operational"


class ArchivalLogic(models.TextChoices):
    DATE_BASED = "DATE_BASED", "Date based"
    CONTRACT_MATURITY = "CONTRACT_MATURITY", "Contract maturity"


# What "active" means, for the ORM and for the engine's plain reads (archival.engine.spec).
ACTIVE_CONFIG = {"is_active": True}


class TableConfigQuerySet(models.QuerySet):
    def active(self):
        return self.filter(**ACTIVE_CONFIG)


class TableConfig(models.Model):
    source_db = models.CharField(
        "source database",
        max_length=63,
        help_text="Database alias of the source (one of SOURCE_DATABASES).",
    )
    schema_name = models.CharField(
        "schema",
        max_length=128,
        validators=[identifier_validator],
        help_text="Source schema: dbo on SQL Server, public or a per-source schema on PostgreSQL, main on SQLite.",
    )
    table_name = models.CharField(
        "table",
        max_length=128,
        validators=[identifier_validator],
        help_text="Source table name, exactly as in the database.",
    )
    table_type = models.CharField(
        max_length=16,
        choices=TableType,
        default=TableType.FUNCTIONAL,
        help_text="Drives default retentions and the disposal review policy.",
    )
    archival_logic = models.CharField(
        max_length=20,
        choices=ArchivalLogic,
        default=ArchivalLogic.DATE_BASED,
        help_text="DATE_BASED: the row's own date column. CONTRACT_MATURITY: the maturity of the contract it references.",
    )
    date_column = models.CharField(
        max_length=128,
        blank=True,
        validators=[identifier_validator],
        help_text="DATE_BASED: the column whose date makes a row eligible.",
    )
    contract_table = models.CharField(
        max_length=128,
        blank=True,
        validators=[identifier_validator],
        help_text="CONTRACT_MATURITY: the contract table, in the same source database and schema.",
    )
    contract_key_column = models.CharField(
        max_length=128,
        blank=True,
        validators=[identifier_validator],
        help_text="CONTRACT_MATURITY: the contract table's key column.",
    )
    contract_reference_column = models.CharField(
        max_length=128,
        blank=True,
        validators=[identifier_validator],
        help_text="CONTRACT_MATURITY: the column of this table that references the contract key.",
    )
    contract_maturity_column = models.CharField(
        max_length=128,
        blank=True,
        validators=[identifier_validator],
        help_text="CONTRACT_MATURITY: the contract table's maturity date column.",
    )
    hold_contract_column = models.CharField(
        max_length=128,
        blank=True,
        validators=[identifier_validator],
        help_text="Optional: the column holding a contract id, so contract holds can match this table's rows.",
    )
    months_retention_source = models.PositiveIntegerField(
        "months kept in source",
        null=True,
        blank=True,
        validators=[MaxValueValidator(1200)],
        help_text="Rows older than this many calendar months before the run's cutoff are archived. Empty: the table type's default.",
    )
    years_retention_archive = models.PositiveIntegerField(
        "years kept in archive",
        null=True,
        blank=True,
        validators=[MinValueValidator(0), MaxValueValidator(100)],
        help_text="Archived rows are kept this many years after their reference date. Empty: the table type's default.",
    )
    primary_key_columns = models.CharField(
        max_length=512,
        blank=True,
        help_text="Comma-separated primary key columns in key order; filled from the live schema when empty and checked against it.",
    )
    execution_priority = models.IntegerField(
        default=100,
        help_text="Lower runs first, after foreign-key order (children before the contracts they reference).",
    )
    batch_size = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Rows per batch transaction. Empty: 5,000 (4,000 on SQL Server, below lock escalation).",
    )
    min_batch_size = models.PositiveIntegerField(
        "smallest batch",
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(100_000)],
        help_text="Pacing shrinks this table's batches no further than this when they slow down or wait for locks. "
        "Empty: the scheduler settings' smallest batch (never more than the batch size).",
    )
    max_pause_ms = models.PositiveIntegerField(
        "longest pause (ms)",
        null=True,
        blank=True,
        validators=[MaxValueValidator(600_000)],
        help_text="The longest pause pacing puts between two batches of this table. Empty: the scheduler settings' value.",
    )
    window_start = models.TimeField(
        "run window from",
        null=True,
        blank=True,
        help_text="Archive this table only from this time of day (local time, TIME_ZONE), e.g. 01:00. "
        "Empty with 'until': any time (the run's own window still applies). A window may span midnight (22:00 to 04:00).",
    )
    window_end = models.TimeField(
        "run window until",
        null=True,
        blank=True,
        help_text="...and until this time of day (local time), e.g. 05:00: no batch starts after it; the table "
        "waits with reason 'run window' and the scheduled run takes it up when the window opens again.",
    )
    is_active = models.BooleanField("active", default=True, help_text="Inactive configs are skipped by runs.")
    created_at = models.DateTimeField(auto_now_add=True, help_text="When the config was created.")
    updated_at = models.DateTimeField(auto_now=True, help_text="When the config last changed.")

    objects = TableConfigQuerySet.as_manager()
    history = HistoricalRecords(excluded_fields=["updated_at"])

    class Meta:
        ordering = ["source_db", "execution_priority", "table_name"]
        constraints = [
            # One config per source table: two would race each other's moves.
            models.UniqueConstraint(
                fields=["source_db", "schema_name", "table_name"],
                name="tableconfig_unique_source_table",
            ),
        ]
        indexes = [
            # The run planner lists active configs per source in priority order.
            models.Index(
                fields=["is_active", "source_db", "execution_priority"],
                name="tableconfig_active_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.source_db}.{self.schema_name}.{self.table_name}"

    @property
    def label(self) -> str:
        return str(self)

    def contract_column_for_holds(self) -> str:
        """The column a contract hold matches in this table's archived rows.

        A table carries a contract directly (its hold contract column) or
        through the contract join: a table archived by its contract's maturity
        holds the contract id in its reference column (the child), and the
        contract table another config joins to holds it in the key column that
        join names (the parent). '' when the table carries no contract. The
        disposal hold check (every engine, SQL Server's procedures included),
        the hold preview and the search all read it here.
        """
        if self.hold_contract_column:
            return self.hold_contract_column
        if self.archival_logic == ArchivalLogic.CONTRACT_MATURITY and self.contract_reference_column:
            return self.contract_reference_column
        joined_by = (
            TableConfig.objects.filter(
                source_db=self.source_db,
                schema_name=self.schema_name,
                contract_table=self.table_name,
                archival_logic=ArchivalLogic.CONTRACT_MATURITY,
            )
            .exclude(contract_key_column="")
            .exclude(pk=self.pk)
            .order_by("pk")
            .values_list("contract_key_column", flat=True)
            .first()
        )
        return joined_by or ""

    @property
    def pk_columns(self) -> list[str]:
        return [c.strip() for c in self.primary_key_columns.split(",") if c.strip()]

    @property
    def effective_months(self) -> int:
        if self.months_retention_source is not None:
            return self.months_retention_source
        return settings.ARCHIVAL["TYPE_DEFAULTS"][self.table_type][0]

    @property
    def effective_years(self) -> int:
        if self.years_retention_archive is not None:
            return self.years_retention_archive
        return settings.ARCHIVAL["TYPE_DEFAULTS"][self.table_type][1]

    @property
    def effective_batch_size(self) -> int:
        if self.batch_size:
            return self.batch_size

        # The smaller default of the two engines a batch runs on (SQL Server:
        # below lock escalation, whether it is the source or the archive).
        return min(backend_for(alias).default_batch_size for alias in (self.source_db, ARCHIVE_ALIAS))

    def clean(self) -> None:
        errors: dict[str, str] = {}
        if self.source_db not in settings.SOURCE_DATABASES:
            errors["source_db"] = (
                f"Unknown source database {self.source_db!r}; configured: {', '.join(settings.SOURCE_DATABASES)}."
            )
        if self.archival_logic == ArchivalLogic.DATE_BASED:
            if not self.date_column:
                errors["date_column"] = "A date-based config needs its date column."
        else:
            for field in (
                "contract_table",
                "contract_key_column",
                "contract_reference_column",
                "contract_maturity_column",
            ):
                if not getattr(self, field):
                    errors[field] = "A contract-maturity config needs the whole contract join."
        if self.batch_size:
            # The archive's engine runs the batch (on SQL Server, a procedure
            # that refuses more): refused here, not halfway through a run.
            ceiling = backend_for(ARCHIVE_ALIAS).max_batch_size
            if ceiling is not None and self.batch_size > ceiling:
                errors["batch_size"] = f"At most {ceiling:,} rows per batch on this archive database."
        if self.min_batch_size and self.batch_size and self.min_batch_size > self.batch_size:
            errors["min_batch_size"] = "The smallest batch cannot be larger than the batch size."
        if (self.window_start is None) != (self.window_end is None):
            errors["window_end" if self.window_end is None else "window_start"] = (
                "A run window needs both its start and its end (or neither)."
            )
        elif self.window_start is not None and self.window_start == self.window_end:
            errors["window_end"] = "The window would be empty: give a different end, or leave both empty."
        if errors:
            raise ValidationError(errors)
        # Only a well-formed config is checked against the live schema.
        validate_config_against_schema(self)
