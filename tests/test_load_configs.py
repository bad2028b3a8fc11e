"""Loading configs from the command line: every row error reported, all or nothing; docs/configs.md's examples load.

Persona: an archival administrator at a shell (and, for retention changes, a
user whose permissions apply).
"""

from __future__ import annotations

import re
from io import StringIO
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from archival.demo import DemoSize, build_demo, source_schema
from governance.models import TableConfig

pytestmark = pytest.mark.django_db(databases="__all__")

DOCS = Path(settings.BASE_DIR) / "docs" / "configs.md"
TINY = DemoSize(positions=50, contracts=10, trades=20, prices=20, generated_tables=0, generated_rows=0)


@pytest.fixture
def demo_sources():
    build_demo(TINY, configs=False)


def on_this_engine(text: str) -> str:
    """The docs' examples are written for SQLite (schema ``main``); each source's schema on this engine."""
    for alias in ("SourceDB1", "SourceDB2", "SourceDB3"):
        text = text.replace(f"{alias},main,", f"{alias},{source_schema(alias)},")
    return text


def write(tmp_path: Path, text: str, name: str = "configs.csv") -> Path:
    path = tmp_path / name
    path.write_text(on_this_engine(text))
    return path


def load(path: Path, *args) -> tuple[str, str]:
    out, err = StringIO(), StringIO()
    call_command("load_configs", str(path), *args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def test_every_invalid_row_is_reported_with_its_line_and_column_and_nothing_loads(demo_sources, tmp_path):
    path = write(
        tmp_path,
        "source_db,schema_name,table_name,archival_logic,date_column,contract_table\n"
        "SourceDB2,main,Trade,DATE_BASED,settlementDate,\n"  # line 2: valid
        "SourceDB2,main,Trade2,DATE_BASED,settlementDate,\n"  # line 3: no such table
        "SourceDB9,main,Trade,DATE_BASED,settlementDate,\n"  # line 4: no such source
        "SourceDB1,main,Position,CONTRACT_MATURITY,,Contract\n"  # line 5: incomplete join
        "SourceDB2,main,Contract,DATE_BASED,tradeDay,\n",  # line 6: no such column
    )
    err = StringIO()
    with pytest.raises(CommandError, match=r"error\(s\) in 5 row\(s\).*nothing was loaded"):
        call_command("load_configs", str(path), stdout=StringIO(), stderr=err)
    lines = err.getvalue().splitlines()
    for expected in (r"line 3: ", r"line 4: source_db: ", r"line 5: contract_\w+: ", r"line 6: date_column: "):
        assert any(re.search(expected, line) for line in lines), (expected, lines)
    assert not any("line 2:" in line for line in lines), lines
    assert TableConfig.objects.count() == 0


def test_a_valid_file_loads_every_row_once_and_a_second_load_changes_nothing(demo_sources, tmp_path):
    path = write(
        tmp_path,
        "source_db,schema_name,table_name,date_column,execution_priority\n"
        "SourceDB2,main,Trade,settlementDate,10\n"
        "SourceDB2,main,Contract,maturityDate,200\n",
    )
    out, err = load(path, "--dry-run")
    assert "all valid (dry run" in out and TableConfig.objects.count() == 0
    out, err = load(path)
    assert "loaded 2 row(s): 2 new" in out and err == ""
    assert sorted(TableConfig.objects.values_list("table_name", "execution_priority")) == [
        ("Contract", 200),
        ("Trade", 10),
    ]
    out, _ = load(path)
    assert "0 new, 0 changed, 2 unchanged" in out
    assert TableConfig.objects.count() == 2


def test_an_unreadable_or_missing_file_is_one_command_error(demo_sources, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        load(tmp_path / "nope.csv")
    err = StringIO()
    with pytest.raises(CommandError, match="nothing was loaded"):
        call_command("load_configs", str(write(tmp_path, "source_db,schema_name,table_name\n")), stderr=err)
    assert "file: the file has no config rows" in err.getvalue()


@pytest.mark.parametrize("logic", ["DATE_BASED", "CONTRACT_MATURITY"])
def test_the_documented_example_of_each_archival_logic_loads(demo_sources, tmp_path, logic):
    docs = DOCS.read_text()
    section = docs[docs.index(f"## {logic}") :]
    example = re.search(r"```csv\n(.*?)```", section, re.S).group(1)
    out, _ = load(write(tmp_path, example))
    rows = len(example.strip().splitlines()) - 1
    assert f"loaded {rows} row(s): {rows} new" in out
    assert TableConfig.objects.filter(archival_logic=logic).exists()
    for config in TableConfig.objects.all():
        config.full_clean()  # what was loaded is valid on its own too
