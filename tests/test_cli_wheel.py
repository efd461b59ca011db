"""The package users install: the built wheel holds its data files, and its CLI starts without the source tree.

The wheel is built from this checkout, unpacked into a temporary folder, and run in a fresh interpreter
started with ``-I -S`` (no PYTHONPATH, no current folder, no ``.pth`` hooks such as an editable install)
from another folder; only the unpacked wheel and the plain site-packages folders (numpy, Pillow, ...)
are on ``sys.path``. ``.ci/run`` does the full version of this in a fresh virtual environment.
"""

from __future__ import annotations

import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from segformer.cli import COMMANDS as CLI_COMMANDS

ROOT = Path(__file__).resolve().parent.parent
DATA_FILES = [
    "segformer/common/data/sample_cats.jpg",
    "segformer/common/data/ade20k.json",
    "segformer/common/data/cityscapes.json",
]
COMMANDS = list(CLI_COMMANDS)  # every sub-command the CLI lists


@pytest.fixture(scope="module")
def unpacked_wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    wheels = list(out.glob("segformer-*.whl"))
    assert len(wheels) == 1, wheels
    names = set(zipfile.ZipFile(wheels[0]).namelist())
    site_dir = out / "site"
    zipfile.ZipFile(wheels[0]).extractall(site_dir)
    return names, site_dir


def _run_isolated(site_dir: Path, cwd: Path, code: str) -> subprocess.CompletedProcess:
    paths = [str(site_dir)] + site.getsitepackages()
    prelude = f"import sys; sys.path[:0] = {paths!r}; "
    return subprocess.run([sys.executable, "-I", "-S", "-c", prelude + code], cwd=cwd, capture_output=True,
                          text=True, timeout=120)


def test_wheel_holds_package_data_and_entry_points(unpacked_wheel):
    names, site_dir = unpacked_wheel
    missing = [name for name in DATA_FILES + ["segformer/__main__.py", "segformer/cli.py"] if name not in names]
    assert not missing, f"the wheel lacks {missing}"
    entry_points = next(site_dir.glob("segformer-*.dist-info/entry_points.txt")).read_text()
    assert "segformer = segformer.cli:main" in entry_points


def test_wheel_ships_the_license(unpacked_wheel):
    names, site_dir = unpacked_wheel
    licenses = [name for name in names if ".dist-info/" in name and name.rsplit("/", 1)[-1] == "LICENSE"]
    assert licenses, f"the wheel ships no LICENSE file: {sorted(n for n in names if '.dist-info/' in n)}"
    text = (site_dir / licenses[0]).read_text()
    assert "Apache License" in text and "Version 2.0" in text


def test_cli_starts_from_the_unpacked_wheel_outside_the_checkout(unpacked_wheel, tmp_path):
    _, site_dir = unpacked_wheel
    code = (
        "import segformer, runpy; from segformer.cli import main; "
        f"assert segformer.__file__.startswith({str(site_dir)!r}), segformer.__file__; "
        "from segformer.common.images.sample import SAMPLE_IMAGE, load_sample_image; "
        "assert SAMPLE_IMAGE.is_file() and load_sample_image().shape == (480, 640, 3); "
        "from segformer.common.images.labels import get_label_set; assert len(get_label_set('ade20k')[0]) == 150; "
    )
    for argv in [["--version"], ["--help"]] + [[name, "--help"] for name in COMMANDS]:
        result = _run_isolated(site_dir, tmp_path, code + f"main({argv!r})")
        assert result.returncode == 0, (argv, result.stderr[-2000:])
        assert "Traceback" not in result.stderr
    version = _run_isolated(site_dir, tmp_path, "from segformer.cli import main; main(['--version'])")
    assert version.stdout.strip().startswith("segformer ") and version.returncode == 0
    as_module = _run_isolated(site_dir, tmp_path, "import runpy, sys; sys.argv = ['segformer', '--help']; "
                                                  "runpy.run_module('segformer', run_name='__main__')")
    assert as_module.returncode == 0 and "usage: segformer" in as_module.stdout, as_module.stderr[-2000:]
