"""The monorepo's conventions: one PEP 420 namespace, versions that move together, a meta
distribution that installs everything, README and CI that agree."""

import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
PYPROJECTS = sorted(
    p for pattern in ("packages/*", "kernels/*", "models/*") for p in ROOT.glob(f"{pattern}/pyproject.toml")
)


def _meta(path):
    return tomllib.loads(path.read_text())["project"]


def test_distributions_exist():
    names = {_meta(p)["name"] for p in PYPROJECTS}
    assert {"slimtorch", "slimtorch-core", "slimtorch-compress"} <= names


def test_no_namespace_init_anywhere():
    offenders = [p for p in ROOT.glob("*/*/src/slimtorch/__init__.py")]
    assert offenders == [], "slimtorch is a PEP 420 namespace: no slimtorch/__init__.py"


def test_each_code_distribution_has_one_subpackage():
    for path in PYPROJECTS:
        name = _meta(path)["name"]
        if name == "slimtorch":
            continue
        sub = name.removeprefix("slimtorch-")
        assert (path.parent / "src" / "slimtorch" / sub / "__init__.py").is_file(), name
        assert (path.parent / "README.md").is_file(), name


def test_versions_move_together_and_pins_match():
    versions = {_meta(p)["name"]: _meta(p)["version"] for p in PYPROJECTS}
    assert len(set(versions.values())) == 1, versions
    version = next(iter(versions.values()))
    for path in PYPROJECTS:
        for dep in _meta(path).get("dependencies", []):
            m = re.match(r"(slimtorch-[a-z]+)(\[[a-z,]+\])?\s*==\s*([\w.]+)", dep)
            if dep.startswith("slimtorch-"):
                assert m and m.group(3) == version, f"{path}: {dep} should pin =={version}"


def test_meta_distribution_installs_everything():
    meta = next(p for p in PYPROJECTS if _meta(p)["name"] == "slimtorch")
    deps = {re.split(r"[\[=<> ]", d)[0] for d in _meta(meta)["dependencies"]}
    others = {_meta(p)["name"] for p in PYPROJECTS} - {"slimtorch"}
    assert deps == others


def test_readme_lists_every_distribution_and_ci_runs_its_test_command():
    readme = (ROOT / "README.md").read_text()
    for path in PYPROJECTS:
        assert f"`{_meta(path)['name']}`" in readme, _meta(path)["name"]
    assert "ci:test-command" in readme and "README.md" in (ROOT / ".ci" / "run").read_text()
