"""nox sessions for the slimtorch monorepo (see README "Development").

nox -s lint tests                      # what CI runs (.ci/run)
nox -s "tests_alone(package='core')"   # one distribution installed alone, its tests only
nox -s demo -- --device cuda           # the main job
nox -s build                           # every wheel, each installed alone and imported
nox -s timm                            # timm's own model tests on every slim_* model (also in `tests`)
nox -s gpu | bench                     # on a CUDA machine, offline (no installs)
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

import nox

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

nox.options.default_venv_backend = "uv|virtualenv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["lint", "tests"]

ROOT = Path(__file__).parent
TEST_TOOLS = ["pytest", "pytest-xdist", "hypothesis"]
# The stack on the lent GPU machines (torch 2.11 + triton 3.6): the oldest we test against.
OLDEST_STACK = ["torch==2.11.*", "triton==3.6.*", "torchvision==0.26.*"]
# Triton kernels run in the interpreter on CPU tensors; launcher outputs start poisoned.
CPU_TEST_ENV = {
    "TRITON_INTERPRET": "1",
    "SLIMTORCH_BACKEND": "triton",
    "SLIMTORCH_POISON_OUTPUTS": "1",
}


def _distributions() -> dict[str, dict]:
    """name -> {path, deps (slimtorch-* names), extras, sub (the slimtorch.<sub> package)}."""
    found = {}
    for pyproject in sorted(ROOT.glob("*/*/pyproject.toml")):
        if pyproject.parent.parent.name not in ("packages", "kernels", "models"):
            continue
        project = tomllib.loads(pyproject.read_text())["project"]
        # slimtorch distributions it needs to run, or to run its tests (its `test` extra)
        needed = [*project.get("dependencies", []), *project.get("optional-dependencies", {}).get("test", [])]
        deps = [re.split(r"[\[=<>; ]", d)[0] for d in needed]
        found[project["name"]] = {
            "path": pyproject.parent,
            "deps": [d for d in deps if d.startswith("slimtorch")],
            "extras": set(project.get("optional-dependencies", {})),
            "sub": project["name"].removeprefix("slimtorch-"),
        }
    return found


DISTS = _distributions()
CODE_DISTS = sorted(n for n in DISTS if n != "slimtorch")


def _with_local_deps(names: list[str]) -> list[str]:
    """The distributions plus every slimtorch distribution they need, dependencies first."""
    ordered: list[str] = []

    def visit(name: str) -> None:
        if name in ordered:
            return
        for dep in DISTS[name]["deps"]:
            visit(dep)
        ordered.append(name)

    for name in names:
        visit(name)
    return ordered


def _requirement(name: str) -> str:
    extras = sorted({"test", "cuda"} & DISTS[name]["extras"])
    path = str(DISTS[name]["path"])
    return f"{path}[{','.join(extras)}]" if extras else path


def _install(session: nox.Session, names: list[str], pins: tuple[str, ...] = ()) -> None:
    """Install our distributions from their folders (non-editable, as users get them), always
    rebuilt so a reused venv never runs stale code, plus their test extras; ``pins`` constrain
    the same resolution (e.g. an older torch)."""
    names = _with_local_deps(names)
    reqs = [_requirement(n) for n in names]
    if session.venv_backend == "uv":
        reinstall = [a for n in names for a in ("--reinstall-package", n)]
        session.install(*reinstall, *reqs, *TEST_TOOLS, *pins)
    else:
        session.install(*reqs, *TEST_TOOLS, *pins)
        session.install("--force-reinstall", "--no-deps", *[str(DISTS[n]["path"]) for n in names])


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check + ruff format --check over the whole repository."""
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def tests(session: nox.Session) -> None:
    """Every distribution in one venv; the CPU suite, Triton kernels in the interpreter."""
    _install(session, CODE_DISTS)
    args = session.posargs or ["tests", "-n", "2", "--durations=15"]
    session.run("pytest", *args, env=CPU_TEST_ENV)
    if not session.posargs:  # the whole suite also runs timm's own model tests on the zoo (see `timm`)
        _timm_suite(session)


@nox.session
def compat(session: nox.Session) -> None:
    """The CPU suite against the oldest torch/triton we promise (those of the lent GPU machines)."""
    _install(session, CODE_DISTS, pins=tuple(OLDEST_STACK))
    session.run("python", "-c", "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)")
    args = session.posargs or ["tests", "-n", "2"]
    session.run("pytest", *args, env=CPU_TEST_ENV)


@nox.session
@nox.parametrize("package", [DISTS[n]["sub"] for n in CODE_DISTS])
def tests_alone(session: nox.Session, package: str) -> None:
    """One distribution installed alone (with the slimtorch packages it needs) and its tests."""
    _install(session, [f"slimtorch-{package}"])
    session.run("pytest", f"tests/{package}", *session.posargs, env=CPU_TEST_ENV)


@nox.session(venv_backend="none")
def gpu(session: nox.Session) -> None:
    """The suite on a CUDA machine, offline: sources on PYTHONPATH, kernels run natively."""
    session.run("bash", "ci/gpu", *session.posargs, external=True)


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """Every package's benchmarks on this machine's GPU -> benchmarks/results/<device>/."""
    session.run("bash", "ci/bench", *session.posargs, external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: compress a compact CNN every way the installed packages can."""
    _install(session, list(DISTS))
    session.run("slimtorch", "demo", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build every wheel, install each alone in a fresh venv (finding its slimtorch
    dependencies among the fresh wheels) and import it."""
    session.install("build")
    dist = Path(tempfile.mkdtemp(prefix="slimtorch-wheels-"))
    for name in DISTS:
        session.run("python", "-m", "build", "--wheel", "--outdir", str(dist), str(DISTS[name]["path"]))
    wheels = {name: next(dist.glob(name.replace("-", "_") + "-*.whl")) for name in DISTS}
    uv = session.venv_backend == "uv"
    for name, wheel in wheels.items():
        venv = dist / f"venv-{name}"
        python = str(venv / "bin" / "python")
        if uv:
            session.run("uv", "venv", "-q", str(venv), external=True)
            session.run(
                "uv",
                "pip",
                "install",
                "-q",
                "--python",
                python,
                "--find-links",
                str(dist),
                str(wheel),
                external=True,
            )
        else:
            session.run("python", "-m", "venv", str(venv))
            session.run(
                python,
                "-m",
                "pip",
                "install",
                "-q",
                "--find-links",
                str(dist),
                str(wheel),
                external=True,
            )
        subs = (
            [DISTS[n]["sub"] for n in _with_local_deps([name]) if n != "slimtorch"]
            if name == "slimtorch"
            else [DISTS[name]["sub"]]
        )
        code = "; ".join(f"import slimtorch.{s}" for s in subs) + "; print('imported', " + repr(subs) + ")"
        session.run(python, "-c", code, external=True)
    session.log(f"wheels in {dist}")


@nox.session
@nox.parametrize("stack", ["newest", "oldest"])
def sass(session: nox.Session, stack: str) -> None:
    """The static SASS report (no GPU): every kernel on its real shapes, specialised exactly as at
    run time, compiled for sm_90a and read from the cubin -> benchmarks/static/. ``newest`` writes
    sm_90a.{json,md}; ``oldest`` (the GPU machines' torch/triton, OLDEST_STACK) sm_90a-triton<ver>."""
    pins = tuple(OLDEST_STACK) if stack == "oldest" else ()
    _install(session, CODE_DISTS, pins=pins)
    triton_pin = next((p.split("==")[1].rstrip(".*") for p in pins if p.startswith("triton==")), None)
    stem = "sm_90a" if triton_pin is None else f"sm_90a-triton{triton_pin}"
    env = {"TRITON_INTERPRET": "0"}  # real @triton.jit kernels: the report compiles them
    session.run("python", "-m", "slimtorch.core.sass", "--stem", stem, *session.posargs, env=env)


def _timm_suite(session: nox.Session, *args: str) -> None:
    session.install("pip")  # ci/timm_suite.py fetches timm's sdist with pip (uv's venvs have none)
    session.run("python", "ci/timm_suite.py", *args)


@nox.session
def timm(session: nox.Session) -> None:
    """timm's own tests/test_models.py (from the sdist of the installed timm version, fetched once)
    on every slim_* model; TorchScript tests deselected (ci/timm_suite.py says why)."""
    _install(session, ["slimtorch-zoo"])
    _timm_suite(session, *session.posargs)


@nox.session
def goals(session: nox.Session) -> None:
    """slimtorch-compress's 3-seed goals on the digits task: Deep Compression ratios and accuracy,
    knowledge distillation against labels alone (not in CI; tens of minutes on 2 CPU cores)."""
    _install(session, ["slimtorch-compress", "slimtorch-quant"])
    session.run("python", "-m", "slimtorch.compress.goals", *session.posargs)


@nox.session
def bench_prune(session: nox.Session) -> None:
    """Channel pruning side by side with Torch-Pruning on CPU (params, MACs, batch-8 latency, time
    to prune) -> benchmarks/results/cpu/prune.*, then the full pruning walks (every zoo and every
    torchvision classification model; CI runs a subset)."""
    _install(session, ["slimtorch-compress", "slimtorch-zoo"])
    session.install("torch-pruning", "torchvision")
    session.run("python", "-m", "slimtorch.compress.bench_prune", *session.posargs)
    env = {**CPU_TEST_ENV, "SLIMTORCH_PRUNE_FULL_WALK": "1"}
    session.run("pytest", "tests/compress/prune", "-n", "2", "--durations=10", env=env)


@nox.session
def prune_digits(session: nox.Session) -> None:
    """Unstructured pruning on the digits task (Han et al.'s iterative magnitude, DNS, lottery ticket,
    SNIP, OBD, OBS, 2:4) for LeNet-300-100 and LeNet-5 -> benchmarks/results/cpu/prune_digits.*."""
    _install(session, ["slimtorch-compress", "slimtorch-sparse"])
    session.run("python", "-m", "slimtorch.compress.prune.digits", *session.posargs)


@nox.session
def structured_goal(session: nox.Session) -> None:
    """slimtorch-structured's accuracy goal on the digits task: block-circulant b = 4 LeNet-300-100,
    fine-tuned, vs dense (3 seeds, about a minute on 2 CPU cores) -> benchmarks/results/cpu/structured_goal.*."""
    _install(session, ["slimtorch-compress", "slimtorch-structured"])
    session.run("python", "-m", "slimtorch.compress.structured_goal", *session.posargs)


@nox.session
def quant_goal_inq(session: nox.Session) -> None:
    """INQ 5-bit power-of-two weights on the digits task (LeNet-300-100, LeNet-5; 3 seeds; also 4 and 3
    bits) against float -> benchmarks/results/cpu/quant_goal_inq.* (not in CI; about an hour on 2 CPU cores)."""
    _install(session, ["slimtorch-compress", "slimtorch-quant"])
    session.run("python", "-m", "slimtorch.compress.quant_goals.inq", *session.posargs)


@nox.session
def quant_goal_pq(session: nox.Session) -> None:
    """Product quantization (Q-CNN) of LeNet-300-100's FC layers on the digits task: a (d, C) grid, codebooks
    fine-tuned, 3 seeds -> benchmarks/results/cpu/quant_goal_pq.* (not in CI; about 6 minutes on 2 loaded CPU cores)."""
    _install(session, ["slimtorch-compress", "slimtorch-quant"])
    session.run("python", "-m", "slimtorch.compress.quant_goals.pq", *session.posargs)


@nox.session
def quant_goal_xnor(session: nox.Session) -> None:
    """XNOR-Net / BNN LeNet-5 (binary inner layers, first/last real) against float on the digits task, 3 seeds,
    evaluated through the packed layers -> benchmarks/results/cpu/quant_goal_xnor.* (not in CI; about 25 minutes
    on 2 loaded CPU cores)."""
    _install(session, ["slimtorch-compress", "slimtorch-quant"])
    session.run("python", "-m", "slimtorch.compress.quant_goals.xnor", *session.posargs)


@nox.session
def quant_goal_mixed(session: nox.Session) -> None:
    """Per-layer mixed precision (plan_bits, 6x size budget) against every uniform quant format on the digits
    LeNet-5, post-training, 3 seeds -> benchmarks/results/cpu/quant_goal_mixed.* (not in CI; about 25 minutes on
    2 loaded CPU cores; --finetune-epochs 1 adds a QAT fine-tune of the plan and of the formats it is compared with)."""
    _install(session, ["slimtorch-compress", "slimtorch-quant"])
    session.run("python", "-m", "slimtorch.compress.quant_goals.mixed", *session.posargs)
