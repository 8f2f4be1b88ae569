"""One well-behaved package: the ``modelreg`` namespace, a light serving import, a complete
distribution that installs and runs outside the repository."""

from __future__ import annotations

import ast
import email
import hashlib
import importlib.metadata
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

import modelreg
from tests.e2e.smoke import register_and_resolve
from tests.e2e.stack import short_tempdir, start_up
from tests.procs import BIN_DIR

REPO = Path(__file__).resolve().parents[1]
#: The repository's process folders, which must be imported as ``modelreg.<name>`` only.
PROCESS_FOLDERS = ("central", "sidecar", "cli")
#: Where Python source lives (``modelreg/`` itself holds links to the process folders).
SOURCE_FOLDERS = (*PROCESS_FOLDERS, "modelreg", "tests", "benchmarks", "examples")
#: A JupyterLab widget on PyPI whose top-level package is ``sidecar``: it overwrote ours in 0.1.
COLLIDING = "sidecar==0.8.1"


def python_files() -> Iterator[Path]:
    """Every ``.py`` file of the repository (links under ``modelreg/`` are not followed)."""
    for folder in SOURCE_FOLDERS:
        yield from sorted((REPO / folder).rglob("*.py"))


def bare_imports(path: Path) -> list[str]:
    """``import central…`` / ``from sidecar… import`` / ``import_module("cli…")`` in ``path``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names = [node.args[0].value]
        found += [
            f"{path.relative_to(REPO)}:{node.lineno}: {name}"  # type: ignore[attr-defined]
            for name in names
            if name.split(".")[0] in PROCESS_FOLDERS
        ]
    return found


class TestNamespace:
    def test_nothing_imports_a_bare_process_folder(self) -> None:
        """Every import of our code goes through ``modelreg.`` (a bare ``central`` would collide
        with any other distribution's top-level ``central``)."""
        files = list(python_files())
        assert len(files) > 100
        assert [] == [hit for path in files for hit in bare_imports(path)]

    def test_the_links_join_the_process_folders(self) -> None:
        """``modelreg/central`` and its siblings are links to the top-level folders."""
        for name in PROCESS_FOLDERS:
            link = REPO / "modelreg" / name
            if link.is_symlink():
                assert Path("..") / name == Path(os.readlink(link))
            else:  # an unpacked sdist holds copies
                assert sorted(p.name for p in (REPO / name).glob("*.py")) == sorted(
                    p.name for p in link.glob("*.py")
                )

    def test_code_cites_only_this_repository(self) -> None:
        """No source file or setting cites design notes that are not in the repository."""
        cited = re.compile(r"DESIGN\.md|STYLE\.md|\.\./shared")
        files = [*python_files(), REPO / "pyproject.toml", REPO / "Makefile"]
        assert [] == [str(p.relative_to(REPO)) for p in files if cited.search(p.read_text())]

    def test_version_has_one_source(self) -> None:
        """The installed metadata and ``reg --version`` both say ``modelreg.__version__``."""
        assert modelreg.__version__ == importlib.metadata.version("modelreg")
        done = subprocess.run(
            [str(BIN_DIR / "reg"), "--version"], capture_output=True, text=True, check=True
        )
        assert f"reg {modelreg.__version__}\n" == done.stdout


def imported_modules(code: str) -> set[str]:
    """The modules ``python -X importtime -c code`` loads, beyond an empty interpreter's (an
    attempt that failed, such as pickle's optional ``org.python.core``, is not counted)."""

    def run(source: str) -> set[str]:
        done = subprocess.run(
            [
                sys.executable,
                "-X",
                "importtime",
                "-c",
                f"{source}\nimport sys; print(*sys.modules)",
            ],
            capture_output=True,
            text=True,
            check=True,
            cwd=short_tempdir("imports-"),
        )
        timed = {
            line.rsplit("|", 1)[1].strip()
            for line in done.stderr.splitlines()
            if line.startswith("import time:") and line.count("|") == 2
        }
        return timed & set(done.stdout.split())

    return run(code) - run("pass")


class TestServingImport:
    def test_the_serving_import_is_light(self) -> None:
        """``from modelreg import Client`` loads the client, msgpack and the standard library:
        not aiohttp, not the central package, not the CLI."""
        loaded = imported_modules("from modelreg import Client, AsyncClient, ModelNotFound")
        assert {"modelreg", "modelreg.sidecar.client", "modelreg.errors", "msgpack"} <= loaded
        ours = {name for name in loaded if name.split(".")[0] == "modelreg"}
        assert [] == sorted(
            name
            for name in ours
            if name.startswith(("modelreg.central", "modelreg.cli"))
            or name == "modelreg.sidecar.server"
        )
        third_party = {
            name.split(".")[0]
            for name in loaded
            if name.split(".")[0] not in sys.stdlib_module_names and not name.startswith("_")
        }
        assert {"modelreg", "msgpack"} == third_party

    def test_the_top_level_exports_the_client_and_its_errors(self) -> None:
        """The names a serving process needs are all at the top level."""
        from modelreg.errors import ModelNotFound, NotReady, Unavailable
        from modelreg.sidecar.client import AsyncClient, Client, ResolvedModel

        assert (Client, AsyncClient, ResolvedModel) == (
            modelreg.Client,
            modelreg.AsyncClient,
            modelreg.ResolvedModel,
        )
        assert (ModelNotFound, NotReady, Unavailable) == (
            modelreg.ModelNotFound,
            modelreg.NotReady,
            modelreg.Unavailable,
        )
        assert set(modelreg.__all__) <= set(dir(modelreg))


def build(kind: str, into: Path) -> Path:
    """``python -m build --KIND`` of the repository into ``into`` (no download: the test
    extra brings setuptools and build)."""
    subprocess.run(
        [sys.executable, "-m", "build", f"--{kind}", "--no-isolation", "--outdir", str(into)],
        cwd=REPO,
        check=True,
        capture_output=True,
        timeout=300,
    )
    suffix = ".whl" if kind == "wheel" else ".tar.gz"
    (built,) = into.glob(f"*{suffix}")
    return built


@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("dist")


@pytest.fixture(scope="module")
def wheel(dist_dir: Path) -> Path:
    return build("wheel", dist_dir / "wheel")


@pytest.fixture(scope="module")
def sdist(dist_dir: Path) -> Path:
    return build("sdist", dist_dir / "sdist")


def uv(*args: str) -> None:
    """Run this virtualenv's ``uv`` (it installs from the package index, with its own cache)."""
    done = subprocess.run([str(BIN_DIR / "uv"), *args], capture_output=True, text=True)
    assert 0 == done.returncode, done.stderr


@pytest.mark.integration
@pytest.mark.slow
class TestWheel:
    def test_the_wheel_holds_only_modelreg(self, wheel: Path) -> None:
        """One top-level name, real files (no links), the type marker and the licence."""
        with zipfile.ZipFile(wheel) as archive:
            infos = archive.infolist()
            names = [info.filename for info in infos]
            metadata = email.message_from_bytes(
                archive.read(next(n for n in names if n.endswith(".dist-info/METADATA")))
            )
        tops = {name.split("/")[0] for name in names if ".dist-info/" not in name}
        assert {"modelreg"} == tops
        assert [] == [i.filename for i in infos if (i.external_attr >> 16) & 0o170000 == 0o120000]
        for needed in ("modelreg/py.typed", "modelreg/errors.py", "modelreg/central/app.py"):
            assert needed in names
        assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
        assert "Apache-2.0" == metadata["License-Expression"]
        assert modelreg.__version__ == metadata["Version"]
        assert "Typing :: Typed" in metadata.get_all("Classifier", [])

    def test_the_installed_wheel_runs_the_stack(self, wheel: Path) -> None:
        """Installed into a fresh virtualenv outside the repository, the wheel runs ``reg up``,
        push, approve, promote and a resolve through ``from modelreg import Client`` — and keeps
        doing so after ``sidecar==0.8.1``, a distribution with a top-level ``sidecar``, is
        installed beside it."""
        venv = short_tempdir("wheel-venv-")
        uv("venv", "--quiet", "--python", sys.executable, str(venv))
        python = str(venv / "bin" / "python")
        uv("pip", "install", "--quiet", "--python", python, str(wheel))
        up = start_up(short_tempdir("wheel-up-"), bin_dir=venv / "bin")
        try:
            answer = register_and_resolve(up, venv / "bin")
            assert 1 == answer["version"]
            assert hashlib.sha256(b"churn weights, version 1\n").hexdigest() == answer["sha256"]

            uv("pip", "install", "--quiet", "--no-deps", "--python", python, COLLIDING)
            code = (
                "import importlib.util, modelreg, modelreg.sidecar.client, modelreg.cli.main\n"
                "print(importlib.util.find_spec('sidecar').origin, modelreg.__file__)"
            )
            done = subprocess.run([python, "-c", code], capture_output=True, text=True, cwd=venv)
            assert 0 == done.returncode, done.stderr
            theirs, ours = done.stdout.split()
            assert Path(theirs).parent != Path(ours).parent / "sidecar"
            status = subprocess.run(
                [str(venv / "bin" / "reg"), "--json", "status"],
                capture_output=True,
                text=True,
                env=up.env(venv / "bin"),
            )
            assert 0 == status.returncode, status.stderr
            assert '"ready": true' in status.stdout
        finally:
            up.stop()
            shutil.rmtree(venv, ignore_errors=True)


@pytest.mark.integration
@pytest.mark.slow
class TestSdist:
    def test_the_sdist_carries_the_docs_and_the_tests(self, sdist: Path) -> None:
        """Docs, deployment files, examples, the changelog, the licence and the tests."""
        with tarfile.open(sdist) as archive:
            names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
        for needed in (
            "LICENSE",
            "CHANGELOG.md",
            "README.md",
            "Makefile",
            "docs/ARCHITECTURE.md",
            "deploy/README.md",
            "examples/serve.py",
            "tests/test_docs.py",
            "benchmarks/run.py",
            "modelreg/py.typed",
            "modelreg/central/app.py",
            "central/app.py",
        ):
            assert needed in names

    def test_tests_pass_from_the_unpacked_sdist(self, sdist: Path, tmp_path: Path) -> None:
        """The docs, package and unit tests pass in an unpacked sdist, importing its own copy."""
        with tarfile.open(sdist) as archive:
            archive.extractall(tmp_path, filter="data")
        (root,) = tmp_path.iterdir()
        where = subprocess.run(
            [sys.executable, "-c", "import modelreg.central.app as m; print(m.__file__)"],
            cwd=root,
            capture_output=True,
            text=True,
            check=True,
        )
        assert Path(where.stdout.strip()).is_relative_to(root)
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:randomly",
                "tests/test_docs.py",
                "tests/test_package.py::TestNamespace",
                "tests/central/test_registry.py",
                "tests/sidecar/test_protocol.py",
            ],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert 0 == done.returncode, done.stdout[-3000:]
        assert " passed" in done.stdout
