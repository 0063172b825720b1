"""timm's own model test suite (``tests/test_models.py`` of timm's source distribution) run
against the zoo's ``slim_*`` models, with the timm that is installed.

    python ci/timm_suite.py [--cache DIR] [-n 2] [-- extra pytest arguments]

1. Reads the installed timm version and fetches that version's sdist from the package index
   once (``pip download --no-deps --no-binary :all: timm==<version>``) into a cache folder
   (``--cache``, else ``$SLIMTORCH_TIMM_TESTS_CACHE``, else ``~/.cache/slimtorch/timm-tests``),
   extracting its ``tests/`` and ``pyproject.toml`` (timm's pytest settings and markers).
2. Runs ``pytest tests/test_models.py`` there with this file as a plugin (``-p timm_suite``):
   importing ``slimtorch.zoo`` before timm's test module is collected registers the ``slim_*``
   models, so timm's ``list_models(...)`` parametrisations (with timm's own ``EXCLUDE_FILTERS``,
   ``NON_STD_FILTERS``, ``FEAT_INTER_FILTERS`` module lists) include them; collection then keeps
   only tests parametrised with a ``slim_*`` ``model_name``.

Deselected, with the reason printed in the summary:
- every test of timm's own models (and those hard-wired to one of them): not ours to run;
- the TorchScript tests (``test_model_forward_torchscript``, ``test_model_forward_fx_torchscript``):
  ``torch.jit.script`` is deprecated in the torch we support, and the slimtorch.convops layers
  the zoo is built of dispatch in Python (optional shuffle groups, padding given as an int or a
  sequence) in ways TorchScript cannot compile; ``torch.compile`` and ``torch.export`` of the
  zoo are tested in tests/zoo/test_timm.py instead.

The convops layers run their pure-torch references (``SLIMTORCH_BACKEND=reference``; the
Triton interpreter switches are cleared for the run, as tests/zoo does with ``reference_only``):
the suite tests the models; the kernels are tested in tests/convops. timm's
``@pytest.mark.timeout`` limits are not enforced (pytest-timeout is not installed); the marker
is registered so that it does not warn.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ZOO_PREFIX = "slim_"
TORCHSCRIPT_TESTS = ("test_model_forward_torchscript", "test_model_forward_fx_torchscript")
REASONS = {
    "other": "not a slimtorch.zoo model (timm's own models and model-specific tests)",
    "torchscript": "TorchScript: torch.jit.script is deprecated and cannot compile the convops layers' "
    "Python dispatch; torch.compile / torch.export are tested in tests/zoo/test_timm.py",
}


# ----------------------------------------------------------------------------- fetching timm's tests


def default_cache() -> Path:
    env = os.environ.get("SLIMTORCH_TIMM_TESTS_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "slimtorch" / "timm-tests"


def _pip() -> list[str]:
    """pip of this interpreter, else the first pip on PATH (nox's uv venvs have none)."""
    if importlib.util.find_spec("pip") is not None:
        return [sys.executable, "-m", "pip"]
    for name in ("pip", "pip3"):
        found = shutil.which(name)
        if found:
            return [found]
    raise RuntimeError("timm_suite: no pip found (install pip into this environment) to fetch timm's sdist")


def fetch_timm_tests(version: str, cache: Path) -> Path:
    """``<cache>/timm-<version>`` holding timm's ``tests/`` and ``pyproject.toml``, fetched once."""
    root = cache / f"timm-{version}"
    if (root / "tests" / "test_models.py").is_file() and (root / "pyproject.toml").is_file():
        return root
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        cmd = [*_pip(), "download", "--quiet", "--no-deps", "--no-binary", ":all:", f"timm=={version}", "-d", tmp]
        subprocess.run(cmd, check=True)
        (sdist,) = Path(tmp).glob(f"timm-{version}.tar.gz")
        top = f"timm-{version}/"
        staging = Path(tmp) / "extracted"
        with tarfile.open(sdist) as tar:
            members = [
                m
                for m in tar.getmembers()
                if (m.name.startswith(top + "tests/") or m.name == top + "pyproject.toml") and (m.isfile() or m.isdir())
            ]
            safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python >= 3.10.12
            tar.extractall(staging, members=members, **safe)
        if not (staging / top / "tests" / "test_models.py").is_file():
            raise RuntimeError(f"timm_suite: {sdist.name} has no tests/test_models.py")
        try:
            os.replace(staging / top, root)  # atomic: a half-extracted folder is never used
        except OSError:
            if not (root / "tests" / "test_models.py").is_file():  # else a concurrent run got there first
                raise
    return root


# ----------------------------------------------------------------------------- the pytest plugin


def pytest_configure(config: pytest.Config) -> None:
    import slimtorch.zoo  # noqa: F401  (registers the slim_* models before timm's tests are collected)

    config.addinivalue_line("markers", "timeout(seconds): timm's per-test limit (pytest-timeout; not enforced here)")


def _reason(item: pytest.Item) -> str | None:
    """Why ``item`` is deselected, or None to run it."""
    params = getattr(item, "callspec", None)
    name = params.params.get("model_name") if params else None
    if not (isinstance(name, str) and name.startswith(ZOO_PREFIX)):
        return "other"
    if item.originalname in TORCHSCRIPT_TESTS:
        return "torchscript"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped, counts = [], [], dict.fromkeys(REASONS, 0)
    for item in items:
        reason = _reason(item)
        if reason is None:
            kept.append(item)
        else:
            dropped.append(item)
            counts[reason] += 1
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = kept
    config._slim_deselected = counts  # type: ignore[attr-defined]
    workeroutput = getattr(config, "workeroutput", None)  # an xdist worker: tell the controller
    if workeroutput is not None:
        workeroutput["slim_deselected"] = counts


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error) -> None:  # xdist's hook, on the controller
    counts = getattr(node, "workeroutput", {}).get("slim_deselected")
    if counts is not None:
        node.config._slim_deselected = counts


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    counts = getattr(config, "_slim_deselected", None)
    if counts is None or hasattr(config, "workeroutput"):  # collection did not run, or an xdist worker
        return
    terminalreporter.write_sep("=", "slimtorch: timm's test_models.py on the slim_* models")
    for key, count in counts.items():
        terminalreporter.write_line(f"deselected {count}: {REASONS[key]}")


# ----------------------------------------------------------------------------- entry point


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=None, help="where timm's sdist tests are kept")
    parser.add_argument("-n", "--workers", default="2", help="pytest-xdist workers ('0': none)")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments (after --)")
    args = parser.parse_args(argv)

    version = importlib.metadata.version("timm")
    root = fetch_timm_tests(version, args.cache or default_cache())
    # the convops layers run their references (core's backend rule); no Triton interpreter
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["SLIMTORCH_BACKEND"] = "reference"
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), *filter(None, [env.get("PYTHONPATH")])])
    cmd = [sys.executable, "-m", "pytest", "tests/test_models.py", "-c", "pyproject.toml", "--rootdir", "."]
    cmd += ["-p", "timm_suite", "-q", "-p", "no:cacheprovider", "--durations=5"]
    if args.workers != "0":
        cmd += ["-n", args.workers]
    cmd += args.pytest_args
    print(f"timm {version}: {root / 'tests' / 'test_models.py'} on the slim_* models", flush=True)
    start = time.perf_counter()
    code = subprocess.run(cmd, cwd=root, env=env).returncode
    print(f"timm suite: {time.perf_counter() - start:.0f} s, exit code {code}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
