"""Installing the package: what ``pip install`` brings is what the commands import.

The import walks read the source with ``ast`` (function-level imports included: the scene
writer imports ``slicer`` only when it runs) and compare each third-party package with the
dependencies declared in ``pyproject.toml``; the Slicer module's requirements file is checked
the same way against what Slicer does not ship. The slow test builds the wheel, installs it
into a new virtual environment (offline: the dependencies come from this environment) and runs
``mescc demo`` from there.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.metadata
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest
import tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from MESCCAnalyzerLib.cli import COMMANDS

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MESCCAnalyzer"
LIB = MODULE_DIR / "MESCCAnalyzerLib"
SLICER_REQUIREMENTS = MODULE_DIR / "Resources" / "requirements.txt"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))

# What 3D Slicer's own Python ships (so the module never installs them): the application's
# modules and the packages of its superbuild that the engine uses.
SLICER_SHIPS = {
    "slicer", "qt", "ctk", "DICOMLib", "vtk", "vtkmodules", "numpy", "SimpleITK", "pydicom", "packaging",
}  # fmt: skip


# ---------------------------------------------------------------------------------------
# Import walks
# ---------------------------------------------------------------------------------------
def _module_file(dotted: str) -> Path | None:
    """The file of a first-party module ``MESCCAnalyzerLib.x.y`` (package or module)."""
    parts = dotted.split(".")[1:]
    base = LIB.joinpath(*parts)
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _dotted(path: Path) -> str:
    rel = path.relative_to(MODULE_DIR).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> tuple[set[str], set[str]]:
    """(first-party modules, other top-level names) imported anywhere in ``path``."""
    first, other = set(), set()
    package = _dotted(path) if path.name == "__init__.py" else _dotted(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.name
                (first if name.startswith("MESCCAnalyzerLib") else other).add(
                    name if name.startswith("MESCCAnalyzerLib") else name.split(".")[0]
                )
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module.startswith("MESCCAnalyzerLib"):
                    first.add(node.module)
                else:
                    other.add(node.module.split(".")[0])
                continue
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
            first.add(base)
            first |= {f"{base}.{alias.name}" for alias in node.names}  # submodules named
    return first, other


def third_party_imports(entry_files: list[Path]) -> dict[str, set[str]]:
    """Third-party top-level name -> the first-party files importing it, over every module
    the entry files reach through first-party imports."""
    seen: set[Path] = set()
    todo = list(entry_files)
    found: dict[str, set[str]] = {}
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        first, other = _imports(path)
        for name in other:
            if name not in sys.stdlib_module_names and name != "__future__":
                found.setdefault(name, set()).add(str(path.relative_to(MODULE_DIR)))
        for dotted in first:
            target = _module_file(dotted)
            if target is not None:
                todo.append(target)
    return found


def distributions_of(import_name: str) -> set[str]:
    dists = importlib.metadata.packages_distributions().get(import_name, [])
    return {canonicalize_name(d) for d in dists}


def _closure(requirements: list[Requirement]) -> set[str]:
    """Distributions the requirements bring, recursively (from the installed metadata)."""
    names: set[str] = set()
    todo = [(r, set(r.extras)) for r in requirements]
    while todo:
        requirement, extras = todo.pop()
        name = canonicalize_name(requirement.name)
        if name in names:
            continue
        names.add(name)
        for text in importlib.metadata.requires(requirement.name) or []:
            sub = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if sub.marker is None or any(sub.marker.evaluate(env) for env in envs):
                todo.append((sub, set(sub.extras)))
    return names


def declared(extra: str | None = None) -> list[Requirement]:
    project = PYPROJECT["project"]
    texts = project["optional-dependencies"][extra] if extra else project["dependencies"]
    return [Requirement(t) for t in texts]


def default_command_files() -> list[Path]:
    cli = LIB / "cli"
    commands = [cli / f"{name}_cmd.py" for name in COMMANDS if name != "serve"]
    return [cli / "__init__.py", cli / "__main__.py", *commands]


# ---------------------------------------------------------------------------------------
# pyproject.toml against the imports
# ---------------------------------------------------------------------------------------
def test_the_default_commands_import_only_packages_pyproject_declares():
    imports = third_party_imports(default_command_files())
    # The walk must see the lazy imports: the scene writer's slicer, the report's matplotlib.
    assert {"slicer", "matplotlib", "SimpleITK", "vtk", "pydicom"} <= set(imports)
    names = {canonicalize_name(r.name) for r in declared()}
    for name, where in sorted(imports.items()):
        dists = distributions_of(name)
        assert dists, f"{name} (imported by {sorted(where)}) is not installed here"
        assert dists & names, (
            f"{name} (imported by {sorted(where)}) comes from {sorted(dists)}, "
            "which pyproject.toml's dependencies do not declare"
        )


def test_the_scene_dependency_pins_the_vtk_the_report_runs_on():
    (slicer_core,) = [r for r in declared() if canonicalize_name(r.name) == "slicer-core"]
    (vtk,) = [r for r in declared() if r.name == "vtk"]
    installed = importlib.metadata.version("slicer-core")
    assert slicer_core.specifier.contains(installed)
    # slicer-core pins its vtk; that vtk must lie in the range declared for the engine.
    pins = [Requirement(t) for t in importlib.metadata.requires("slicer-core") or []]
    (vtk_pin,) = [r for r in pins if r.name == "vtk" and r.marker is None]
    (pinned,) = [s.version for s in vtk_pin.specifier if s.operator == "=="]
    assert vtk.specifier.contains(pinned)
    assert vtk.specifier.contains(importlib.metadata.version("vtk"))
    # Where slicer-core has wheels (CPython 3.10-3.13, linux x86_64...), it is installed.
    assert slicer_core.marker.evaluate(
        {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "x86_64"}
    )
    assert not slicer_core.marker.evaluate(
        {"python_version": "3.11", "sys_platform": "linux", "platform_machine": "aarch64"}
    )


def test_the_web_page_needs_only_the_web_extra():
    web = sorted((LIB / "web").glob("*.py"))
    imports = third_party_imports([LIB / "cli" / "serve_cmd.py", *web])
    assert "trame" in imports and "trame_slicer" in imports
    available = _closure(declared()) | _closure(declared("web"))
    for name, where in sorted(imports.items()):
        dists = distributions_of(name)
        assert dists & available, (
            f"{name} (imported by {sorted(where)}) is brought neither by the dependencies "
            "nor by the `web` extra"
        )


def test_the_lock_pins_every_declared_dependency_within_its_range():
    lock = {}
    for line in (ROOT / "requirements.lock").read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if text:
            requirement = Requirement(text)
            lock[canonicalize_name(requirement.name)] = next(iter(requirement.specifier)).version
    for requirement in declared() + declared("web") + declared("test"):
        name = canonicalize_name(requirement.name)
        assert name in lock, f"{requirement.name} is declared but not pinned in requirements.lock"
        assert requirement.specifier.contains(lock[name]), (
            f"requirements.lock pins {name} {lock[name]}, outside {requirement}"
        )


# ---------------------------------------------------------------------------------------
# Slicer: the requirements file the module installs on first use
# ---------------------------------------------------------------------------------------
def slicer_requirements() -> list[Requirement]:
    lines = SLICER_REQUIREMENTS.read_text(encoding="utf-8").splitlines()
    texts = [line.split("#", 1)[0].strip() for line in lines]
    return [Requirement(t) for t in texts if t]


def test_the_slicer_requirements_bring_what_the_engine_needs_beyond_slicer():
    engine = sorted(LIB.glob("*.py")) + sorted((LIB / "mrml").glob("*.py"))
    imports = third_party_imports([MODULE_DIR / "MESCCAnalyzer.py", *engine])
    available = _closure(slicer_requirements())
    for name, where in sorted(imports.items()):
        if name in SLICER_SHIPS:
            continue
        assert distributions_of(name) & available, (
            f"{name} (imported by {sorted(where)}) is neither shipped by Slicer nor in "
            "Resources/requirements.txt"
        )


def test_the_slicer_requirements_use_the_ranges_of_pyproject():
    ranges = {canonicalize_name(r.name): r.specifier for r in declared()}
    for requirement in slicer_requirements():
        assert requirement.specifier == ranges[canonicalize_name(requirement.name)]


def _module_functions(*names: str) -> dict:
    """The named top-level functions of MESCCAnalyzer.py, run here with a fake ``slicer``
    (the module itself imports Qt, which pytest has not)."""
    tree = ast.parse((MODULE_DIR / "MESCCAnalyzer.py").read_text(encoding="utf-8"))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name in names]
    assert len(functions) == len(names), f"MESCCAnalyzer.py lacks one of {names}"
    namespace = {
        "importlib": importlib,
        "Path": Path,
        "Requirement": Requirement,
        "REQUIREMENTS_FILE": str(SLICER_REQUIREMENTS),
        "_": lambda text: text,
        "slicer": FakeSlicer(),
    }
    code = ast.Module(body=functions, type_ignores=[])
    exec(compile(code, "MESCCAnalyzer.py", "exec"), namespace)
    return namespace


class FakeSlicer:
    """slicer.util's confirmation dialog, pip_install and error display, recorded."""

    def __init__(self):
        self.util = self
        self.answer = True
        self.asked: list[str] = []
        self.installed: list[list[str]] = []

    def confirmOkCancelDisplay(self, text, windowTitle=None):
        self.asked.append(text)
        return self.answer

    def pip_install(self, requirements):
        self.installed.append(list(requirements))

    def tryWithErrorDisplay(self, message, waitCursor=False):
        return contextlib.nullcontext()


@pytest.fixture
def a_requirements_file(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text(
        "# comment\nnumpy>=1.0  # installed here\nmescc-no-such-package>=1.0\nnumpy<1.0\n"
    )
    return path


def test_the_slicer_module_lists_the_missing_requirements(a_requirements_file):
    ns = _module_functions("missingPythonRequirements")
    assert ns["missingPythonRequirements"](a_requirements_file) == [
        "mescc-no-such-package>=1.0",
        "numpy<1.0",  # installed, but outside the range
    ]
    assert ns["missingPythonRequirements"]() == []  # this environment has them all


def test_the_slicer_module_asks_before_installing(a_requirements_file):
    ns = _module_functions("missingPythonRequirements", "ensurePythonRequirements")
    fake = ns["slicer"]
    fake.answer = False
    assert ns["ensurePythonRequirements"](a_requirements_file) is False
    assert "mescc-no-such-package>=1.0" in fake.asked[0] and not fake.installed
    fake.answer = True
    assert ns["ensurePythonRequirements"](a_requirements_file) is False  # still missing
    assert fake.installed == [["mescc-no-such-package>=1.0", "numpy<1.0"]]
    assert ns["ensurePythonRequirements"](a_requirements_file, ask=False) is False
    assert len(fake.asked) == 2  # the self-test installs without asking


def test_the_slicer_module_asks_nothing_when_all_is_installed():
    ns = _module_functions("missingPythonRequirements", "ensurePythonRequirements")
    assert ns["ensurePythonRequirements"]() is True
    assert not ns["slicer"].asked and not ns["slicer"].installed


# ---------------------------------------------------------------------------------------
# The optional web page
# ---------------------------------------------------------------------------------------
def test_mescc_serve_without_trame_says_which_extra_to_install(tmp_path):
    script = textwrap.dedent(
        """
        import sys
        for name in ("trame", "trame_slicer", "trame_server", "trame_client"):
            sys.modules[name] = None  # as if not installed
        from MESCCAnalyzerLib.cli import main
        sys.exit(main(["serve", "--demo", "--port", "0", "--out", sys.argv[1]]))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "session")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(MODULE_DIR)},
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "mescc-analyzer[web]" in lines[0], done.stderr


# ---------------------------------------------------------------------------------------
# A real install
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_the_wheel_installs_into_a_new_environment_and_runs_the_demo(tmp_path):
    # Build from a copy: the wheel takes what pyproject.toml packages, nothing else.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(
        LIB,
        source / "MESCCAnalyzer" / "MESCCAnalyzerLib",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    wheels = tmp_path / "wheels"
    run = dict(capture_output=True, text=True, timeout=300, check=True)
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-w", wheels, source],
        **run,
    )
    (wheel,) = wheels.glob("mescc_analyzer-*.whl")

    # A new environment; its dependencies are this one's (no network), the package its own.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], **run)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    target = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], **run
    ).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (Path(target) / "dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    subprocess.run([*pip, "--python", python, "install", "--no-deps", "--no-index", wheel], **run)
    # Every dependency the wheel declares (markers evaluated) is satisfied by the lock.
    check = subprocess.run([*pip, "--python", python, "check"], capture_output=True, text=True)
    assert "mescc-analyzer" not in check.stdout, check.stdout

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run["env"] = env
    where = subprocess.run(
        [python, "-c", "import MESCCAnalyzerLib; print(MESCCAnalyzerLib.__file__)"], **run
    ).stdout
    assert where.startswith(str(venv)), f"imported from {where}, not the installed wheel"
    mescc = venv / ("Scripts/mescc.exe" if os.name == "nt" else "bin/mescc")
    version = subprocess.run([mescc, "--version"], **run).stdout
    assert version.strip() == f"mescc {PYPROJECT['project']['version']}"
    out = tmp_path / "demo"
    demo = subprocess.run([mescc, "-q", "demo", "--grade", "2", "--out", out, "--no-scene"], **run)
    assert "phantom truth: grade 2" in demo.stdout
    for name in ("report.html", "metrics.json", "segmentation.seg.nrrd"):
        assert (out / "analysis" / name).is_file()
    assert not (out / "analysis" / "scene.mrb").exists()
