"""The package list in pyproject.toml matches the folders that hold an __init__.py."""

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the same parser, as a package (the dev extra has it)
    import tomli as tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_package_folder_is_installed_under_sluice():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folder_of = {name: folder for name, folder in config["package-dir"].items()}
    found = set()
    for init in ROOT.glob("*/**/__init__.py"):
        rel = init.parent.relative_to(ROOT)
        top, rest = rel.parts[0], rel.parts[1:]
        if top in ("tests", "benchmarks", "examples") or any(p.startswith(".") for p in rel.parts):
            continue
        package = next(n for n, f in folder_of.items() if f == top)
        found.add(".".join((package, *rest)))
    assert found == set(config["packages"])
