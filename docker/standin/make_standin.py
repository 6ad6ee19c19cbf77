#!/usr/bin/env python3
"""Make STAND-IN base images for the Dockerfile from Debian bookworm, for CI machines that cannot
pull NVIDIA's NGC / L4T images.

    sudo TENSORRT_INCLUDE_DIR=/path/to/TensorRT/include docker/standin/make_standin.py
    docker build --build-arg BASE_IMAGE=<build tag> --build-arg RUNTIME_IMAGE=<runtime tag> .

Two images, tagged s2trt-standin:<arch>-<key>-build and -runtime (printed as KEY=VALUE lines):
- runtime: Python 3 + pip (what RUNTIME_IMAGE must have besides TensorRT's libraries);
- build: the runtime image + cmake, g++, CUDA's compiler and headers (the machine's CUDA_HOME,
  default /usr/local/cuda) and TensorRT's headers (TENSORRT_INCLUDE_DIR, copied where NGC keeps them:
  /usr/include/<arch>-linux-gnu). Not for arm64, where only the Python side is checked.

They are NOT NVIDIA's images: no TensorRT or CUDA libraries, no GPU. The plugin compiles in them and
s2infer runs there with ONNX Runtime on the CPU, which is what CI can check without NVIDIA's bases.

Both carry the machine's CA bundle and its pip index settings (http(s) ones only: file:// indexes do
not exist inside), so that pip in `docker build` reaches the same package index as the machine.

Needs root, debootstrap and a running dockerd (DOCKER_HOST); arm64 on another machine also needs
qemu-user-static registered with binfmt_misc. The root file systems are cached as
tar files under $S2TRT_STANDIN_CACHE (default ~/.cache/s2trt-standin), keyed by this file's content,
the architecture, the CUDA version and the TensorRT headers; another key's files of the same
architecture are removed when a new one is made.
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
RUNTIME_PACKAGES = ["python3", "python3-pip", "ca-certificates"]
BUILD_PACKAGES = ["cmake", "g++", "make"]
# Profiling and checkpoint libraries nvcc never links; a third of the toolkit's size.
CUDA_SKIP = ("libcupti", "libnvperf", "libcheckpoint", "libpcsamplingutil")
GNU_ARCH = {"amd64": "x86_64", "arm64": "aarch64"}
NOTICE = ("s2trt STAND-IN for NVIDIA's TensorRT base images (Debian bookworm; no TensorRT or CUDA "
          "libraries, no GPU support). For CI only.")


def log(msg: str) -> None:
    print(f"[standin] {msg}", file=sys.stderr, flush=True)


def run(cmd: list[str], **kw) -> None:
    """Their output goes to stderr: stdout carries only the KEY=VALUE result lines."""
    log(" ".join(cmd))
    subprocess.run(cmd, check=True, stdout=sys.stderr, **kw)


def host_arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


def cache_key(arch: str, cuda: Path | None, trt: Path | None) -> str:
    h = hashlib.sha256(Path(__file__).read_bytes())
    h.update(arch.encode())
    if cuda is not None:
        h.update((cuda / "include" / "cuda.h").read_bytes())
    if trt is not None:
        for name in sorted(p.name for p in trt.glob("*.h")):
            h.update(name.encode() + (trt / name).read_bytes())
    return h.hexdigest()[:12]


def pip_conf() -> str:
    """The machine's pip index settings (files and PIP_* variables, as pip itself resolves them) that
    work inside a container: http(s) URLs only."""
    out = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True,
                         text=True, check=False).stdout
    settings: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        settings[key.split(".", 1)[-1]] = value.strip().strip("'\"")
    conf = configparser.ConfigParser()
    conf["global"] = {"cert": "/etc/ssl/certs/ca-certificates.crt"}
    for key in ("index-url", "extra-index-url", "trusted-host"):
        urls = [u for u in settings.get(key, "").split() if key == "trusted-host" or u.startswith("http")]
        dropped = set(settings.get(key, "").split()) - set(urls)
        if dropped:
            log(f"pip {key} not reachable from a container, left out: {' '.join(sorted(dropped))}")
        if urls:
            conf["global"][key] = " ".join(urls)
    lines = [f"# {NOTICE}\n# pip index settings of the machine that made this image.\n"]
    with tempfile.TemporaryFile("w+") as f:
        conf.write(f)
        f.seek(0)
        lines.append(f.read())
    return "".join(lines)


def finish_rootfs(root: Path) -> None:
    """What makes a debootstrapped tree behave like NVIDIA's bases for the Dockerfile."""
    shutil.copyfile("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")
    (root / "etc/pip.conf").write_text(pip_conf())
    # NGC and L4T let pip install into the system Python (they have no PEP 668 marker).
    for marker in root.glob("usr/lib/python3*/EXTERNALLY-MANAGED"):
        marker.unlink()
    (root / "etc/s2trt-standin").write_text(NOTICE + "\n")
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / junk).glob("*"):
            if p.is_file():
                p.unlink()
    for name in ("etc/hostname", "etc/resolv.conf"):
        (root / name).unlink(missing_ok=True)


def chroot_apt(root: Path, packages: list[str]) -> None:
    shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C"}
    run(["chroot", str(root), "apt-get", "update", "-q"], env=env)
    run(["chroot", str(root), "apt-get", "install", "-y", "-q", "--no-install-recommends", *packages],
        env=env)
    run(["chroot", str(root), "apt-get", "clean"], env=env)


def add_cuda(root: Path, cuda: Path) -> None:
    dest = root / "usr/local" / cuda.resolve().name
    shutil.copytree(cuda.resolve(), dest, symlinks=True,
                    ignore=lambda _d, names: [n for n in names if n.startswith(CUDA_SKIP)
                                              or n == "dist-info"])
    (root / "usr/local/cuda").symlink_to(dest.name)


def add_tensorrt_headers(root: Path, trt: Path, arch: str) -> None:
    dest = root / "usr/include" / f"{GNU_ARCH[arch]}-linux-gnu"
    for header in trt.glob("*.h"):
        shutil.copy2(header, dest / header.name)


def make_tars(arch: str, cuda: Path | None, trt: Path | None, out: Path, mirror: str) -> None:
    work = Path(tempfile.mkdtemp(prefix="work-", dir=out.parent))
    try:
        root = work / "rootfs"
        run(["debootstrap", "--variant=minbase", f"--arch={arch}",
             f"--include={','.join(RUNTIME_PACKAGES)}", SUITE, str(root), mirror])
        finish_rootfs(root)
        pack(root, work / "runtime.tar")
        if cuda is not None and trt is not None:
            chroot_apt(root, BUILD_PACKAGES)
            finish_rootfs(root)
            add_cuda(root, cuda)
            add_tensorrt_headers(root, trt, arch)
            pack(root, work / "build.tar")
        shutil.rmtree(root)
        work.rename(out)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pack(root: Path, tar: Path) -> None:
    run(["tar", "--numeric-owner", "--xattrs", "-C", str(root), "-cf", str(tar), "."])


def image_config(arch: str, kind: str, key: str, diff_id: str) -> dict:
    path = "/usr/local/cuda/bin:" if kind == "build" else ""
    return {
        "architecture": arch,
        "os": "linux",
        "config": {
            "Env": [f"PATH={path}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "LANG=C.UTF-8"],
            "Cmd": ["/bin/bash"],
            "Labels": {"s2trt.standin": key, "org.opencontainers.image.description": NOTICE},
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        "history": [{"created_by": f"docker/standin/make_standin.py ({kind})"}],
    }


def docker_load(tar: Path, tag: str, arch: str, kind: str, key: str) -> None:
    """`docker load` of a one-layer image made here: unlike `docker import`, which records the daemon's
    own architecture (docker 20.10), it says arm64 for an arm64 tree, so --platform finds it."""
    have = subprocess.run(["docker", "image", "inspect", "-f", '{{index .Config.Labels "s2trt.standin"}}',
                           tag], capture_output=True, text=True, check=False)
    if have.returncode == 0 and have.stdout.strip() == key:
        log(f"{tag} already in the daemon")
        return
    sha = hashlib.sha256()
    with tar.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
    config = json.dumps(image_config(arch, kind, key, f"sha256:{sha.hexdigest()}")).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = json.dumps([{"Config": config_name, "RepoTags": [tag], "Layers": ["layer/layer.tar"]}])
    log(f"docker load {tag}")
    with subprocess.Popen(["docker", "load", "-q"], stdin=subprocess.PIPE, stdout=sys.stderr) as load:
        with tarfile.open(fileobj=load.stdin, mode="w|") as archive:
            for name, data in ((config_name, config), ("manifest.json", manifest.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
            archive.add(tar, "layer/layer.tar")
        load.stdin.close()
    if load.returncode:
        raise SystemExit(f"docker load of {tag} failed (exit {load.returncode})")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default=host_arch(), choices=sorted(GNU_ARCH),
                    help="Debian architecture (default: the machine's); arm64 makes the runtime image only")
    ap.add_argument("--mirror", default=MIRROR, help=f"Debian mirror (default {MIRROR})")
    ap.add_argument("--cache", type=Path,
                    default=Path(os.environ.get("S2TRT_STANDIN_CACHE",
                                                Path.home() / ".cache" / "s2trt-standin")))
    args = ap.parse_args(argv)

    cuda = trt = None
    if args.arch == host_arch():
        cuda = Path(os.environ.get("CUDA_HOME", "/usr/local/cuda"))
        if not (cuda / "bin" / "nvcc").is_file():
            ap.error(f"no nvcc in {cuda}/bin: set CUDA_HOME")
        trt = Path(os.environ.get("TENSORRT_INCLUDE_DIR") or "/nonexistent")
        if not (trt / "NvInferRuntime.h").is_file():
            ap.error("TENSORRT_INCLUDE_DIR must name TensorRT's include/ folder (NvInferRuntime.h)")
    if os.geteuid() != 0:
        ap.error("debootstrap and chroot need root")

    key = cache_key(args.arch, cuda, trt)
    args.cache.mkdir(parents=True, exist_ok=True)
    out = args.cache / f"{args.arch}-{key}"
    if not out.is_dir():
        for old in args.cache.glob(f"{args.arch}-*"):
            log(f"removing the outdated cache {old}")
            shutil.rmtree(old, ignore_errors=True)
        make_tars(args.arch, cuda, trt, out, args.mirror)
    else:
        log(f"cached root file systems in {out}")

    kinds = ["runtime", "build"] if cuda is not None else ["runtime"]
    for kind in kinds:
        tag = f"s2trt-standin:{args.arch}-{key}-{kind}"
        docker_load(out / f"{kind}.tar", tag, args.arch, kind, key)
        print(f"{kind.upper()}_IMAGE={tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
