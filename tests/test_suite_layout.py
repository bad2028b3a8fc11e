"""The test suite's own layout: fixtures come from the registered fixture modules, one meaning per name.

pytest finds a fixture by its name alone: two registered modules defining the
same name would leave one of them silently unused. A test module importing
another test module (or conftest, which pytest has already loaded under
another name) runs that module's code twice.
"""

from __future__ import annotations

import ast
from collections import Counter
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def fixture_names(path: Path) -> list[str]:
    """The names of the fixtures ``path`` defines (``name=`` where given)."""
    names = []
    for node in ast.parse(path.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for decorator in node.decorator_list:
            call = decorator if isinstance(decorator, ast.Call) else None
            target = call.func if call else decorator
            if ast.unparse(target) != "pytest.fixture":
                continue
            given = [k.value.value for k in (call.keywords if call else []) if k.arg == "name"]
            names.append(given[0] if given else node.name)
    return names


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def registered() -> list[Path]:
    """conftest and the fixture modules its ``pytest_plugins`` names."""
    plugins: list[str] = []
    for node in ast.parse((TESTS / "conftest.py").read_text()).body:
        if isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["pytest_plugins"]:
            plugins = ast.literal_eval(node.value)
    return [TESTS / "conftest.py", *(TESTS / f"{m.removeprefix('tests.')}.py" for m in plugins)]


def test_no_two_registered_fixture_modules_define_the_same_fixture_name():
    counts = Counter(name for path in registered() for name in fixture_names(path))
    assert [name for name, n in counts.items() if n > 1] == []


def test_every_module_holding_fixtures_is_registered():
    holders = {path for path in TESTS.glob("*.py") if not path.name.startswith("test_") and fixture_names(path)}
    assert holders <= set(registered())


def test_no_test_module_imports_a_test_module_or_conftest():
    wrong = sorted(
        f"{path.name}: {module}"
        for path in TESTS.glob("*.py")
        for module in imported_modules(path)
        if module.startswith("tests.test_") or module in ("conftest", "tests.conftest")
    )
    assert wrong == []


def test_the_checks_see_a_clash_and_an_import(tmp_path):
    first, second = tmp_path / "a_fixtures.py", tmp_path / "test_b.py"
    first.write_text('import pytest\n\n\n@pytest.fixture(name="personas")\ndef fixture_personas():\n    pass\n')
    second.write_text(
        "import pytest\nfrom tests.test_admin_pages import helper\n\n\n@pytest.fixture\ndef personas():\n    pass\n"
    )
    assert fixture_names(first) == fixture_names(second) == ["personas"]
    assert "tests.test_admin_pages" in imported_modules(second)
