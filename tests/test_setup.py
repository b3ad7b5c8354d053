"""The Makefile's set-up: the virtual environment is (re)created when it has no pip."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_a_venv_left_without_pip_is_created_again(tmp_path: Path) -> None:
    # a `python -m venv` that failed for want of ensurepip leaves bin/python without bin/pip:
    # the next `make` must not take that half-made environment for a finished one
    shutil.copy(ROOT / "Makefile", tmp_path / "Makefile")
    broken = tmp_path / ".venv" / "bin"
    broken.mkdir(parents=True)
    (broken / "python").symlink_to(sys.executable)
    result = subprocess.run(
        ["make", "-s", ".venv/bin/pip", f"PYTHON={sys.executable}"], cwd=tmp_path, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert (broken / "pip").exists()
    pip = subprocess.run([str(broken / "python"), "-m", "pip", "--version"], capture_output=True, text=True)
    assert pip.returncode == 0 and str(tmp_path / ".venv") in pip.stdout


def test_every_folder_of_modules_is_a_package_of_the_distribution() -> None:
    # pyproject.toml finds packages with namespaces = false: a folder of modules without an
    # __init__.py is left out of a built wheel, while in-tree runs and the editable install still
    # import it (as a namespace package), so every other test would pass
    setuptools = pytest.importorskip("setuptools")
    packages = set(setuptools.find_packages(where=str(ROOT), include=["tenfold*"]))
    folders = {".".join(path.parent.relative_to(ROOT).parts) for path in (ROOT / "tenfold").rglob("*.py")}
    assert "tenfold.modules.samplers" in packages
    missing = sorted(folders - packages)
    assert not missing, f"add an __init__.py to: {', '.join(name.replace('.', '/') for name in missing)}"
