"""The package layout holds: modules stay small (the import contract is `make lint`'s job)."""

from pathlib import Path

import inducthead as ih

PACKAGE = Path(ih.__file__).resolve().parent


def test_no_module_is_over_400_lines():
    sizes = {p.relative_to(PACKAGE): len(p.read_text().splitlines()) for p in PACKAGE.rglob("*.py")}
    assert {p: n for p, n in sizes.items() if n > 400} == {}


def test_every_subpackage_has_a_docstring_saying_what_it_holds():
    for init in PACKAGE.glob("*/__init__.py"):
        assert init.read_text().lstrip().startswith('"""'), init
