"""core/argv_secret: the preload library built with the system's compiler and loaded into a real
program (sh), which gets the secret in its arguments while /proc/PID/cmdline, what other users read,
keeps the placeholder; the program's own children find nothing to read."""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from pathlib import Path

import pytest

from s2trt import argv_secret
from s2trt.errors import S2Error

pytestmark = pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler (apt-get install gcc)")

# What sh prints: its argument with the secret in, then its child's (env's) environment; then it waits.
SCRIPT = 'printf "%s\\n" "$1"; env; read -r _'
SECRET = "pa ss'wörd@:/?#&=\"x"  # spaces, quotes, URL punctuation and UTF-8: handed over byte for byte


def _run_sh(env: dict[str, str], pass_fds: tuple[int, ...] = ()) -> tuple[subprocess.Popen, bytes, bytes]:
    """sh started with the placeholder in its argument, the argument it got, and its command line as
    /proc shows it."""
    proc = subprocess.Popen(["sh", "-c", SCRIPT, "sh", f"--arg={argv_secret.PLACEHOLDER};"], env=env,
                            pass_fds=pass_fds, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert proc.stdout is not None
    got = proc.stdout.readline().rstrip(b"\n")  # sh has parsed its arguments
    return proc, got, Path(f"/proc/{proc.pid}/cmdline").read_bytes()


def test_the_secret_reaches_the_program_but_not_its_command_line(tmp_path):
    lib = argv_secret.build_library(tmp_path)
    env, fd = argv_secret.piped_environment({"PATH": os.environ["PATH"], "LD_PRELOAD": ""}, lib, SECRET)
    try:
        proc, got, cmdline = _run_sh(env, (fd,))
    finally:
        os.close(fd)
    environ = Path(f"/proc/{proc.pid}/environ").read_bytes()
    out, err = proc.communicate(b"\n", timeout=30)
    assert proc.returncode == 0, err
    assert got.decode() == f"--arg={SECRET};"
    assert cmdline.split(b"\0")[-2] == f"--arg={argv_secret.PLACEHOLDER};".encode()
    assert SECRET.encode() not in cmdline and SECRET.encode() not in environ  # the pipe, not the variable
    # env, sh's child, inherits the preload, but not the name of the (already read) pipe.
    child_env = dict(ln.split("=", 1) for ln in out.decode().splitlines() if "=" in ln)
    assert child_env["LD_PRELOAD"] == str(lib) and argv_secret.FILE_ENV not in child_env


def test_a_key_file_as_s2serve_writes_it(tmp_path):
    lib = argv_secret.build_library(tmp_path)
    key = tmp_path / "admin.key"
    argv_secret.write_secret(key, "k3y")
    assert key.stat().st_mode & 0o777 == 0o600
    env = argv_secret.environment({"PATH": os.environ["PATH"], "LD_PRELOAD": "/other.so"}, lib, key)
    assert env["LD_PRELOAD"] == f"{lib}:/other.so"  # ours first, the user's kept
    env["LD_PRELOAD"] = str(lib)
    proc, got, cmdline = _run_sh(env)
    proc.communicate(b"\n", timeout=30)
    assert got == b"--arg=k3y;" and b"k3y" not in cmdline


def test_a_secret_that_cannot_be_read_stops_the_program_before_it_runs(tmp_path):
    lib = argv_secret.build_library(tmp_path)
    env = argv_secret.environment({"PATH": os.environ["PATH"]}, lib, tmp_path / "missing")
    done = subprocess.run(["sh", "-c", "echo ran", "sh"], env=env, capture_output=True, timeout=30)
    assert done.returncode == 111 and done.stdout == b""
    assert b"s2trt argv_secret: cannot open" in done.stderr


@pytest.mark.parametrize("secret", ["", "x" * (argv_secret.MAX_SECRET + 1), "a\0b"])
def test_a_secret_the_library_cannot_take_is_refused_before_the_child_starts(tmp_path, secret):
    with pytest.raises(S2Error, match=f"the URL x must be 1 to {argv_secret.MAX_SECRET} bytes"):
        argv_secret.piped_environment({}, tmp_path / "lib.so", secret, "the URL x")


def test_the_library_is_built_once_per_process():
    got: list[Path] = []
    threads = [threading.Thread(target=lambda: got.append(argv_secret.process_library())) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(got)) == 1 and got[0].is_file()
    assert got[0].parent.stat().st_mode & 0o777 == 0o700  # a folder of this user's alone


def test_without_a_compiler_the_error_says_what_to_do(monkeypatch):
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setattr(argv_secret.shutil, "which", lambda name: None)
    monkeypatch.setattr(argv_secret, "_built", None)
    with pytest.raises(S2Error, match=r"keeping the password .* needs a C compiler \(cc\) here: install gcc, "
                       "or use the other way"):
        argv_secret.process_library("the password", "use the other way")
    assert argv_secret._built is None  # the next try builds it


def test_a_library_removed_meanwhile_is_built_again(monkeypatch):
    # A temporary-file cleaner under a long run: the next child must still get the library.
    monkeypatch.setattr(argv_secret, "_built", None)
    first = argv_secret.process_library()
    shutil.rmtree(first.parent)
    again = argv_secret.process_library()
    assert again.is_file() and again != first
    assert argv_secret.process_library() == again  # and kept while it is there


def test_ld_so_refusing_the_library_is_told_in_one_line(tmp_path):
    # ld.so's own words, from a real program given a library it cannot load.
    lib = tmp_path / "no-such" / argv_secret.LIBRARY_NAME
    done = subprocess.run(["sh", "-c", "echo ran"], env={"PATH": os.environ["PATH"], "LD_PRELOAD": str(lib)},
                          capture_output=True, text=True, timeout=30)
    assert done.stdout == "ran\n"  # it ran anyway: without the library, so with the placeholder
    lines = done.stderr.splitlines()
    why = [w for ln in lines if (w := argv_secret.preload_failure(ln, "the key")) is not None]
    assert why == [f"the child program never got the key: the system could not load {lib} into it "
                   f"(cannot open shared object file); if {tmp_path} is mounted noexec, set TMPDIR to a "
                   "folder of yours that allows running programs"], lines
    assert argv_secret.preload_failure("ERROR: ld.so: object 'libother.so' from LD_PRELOAD cannot be "
                                       "preloaded (x): ignored.") is None  # the user's own preload


def _replace_folder(folder: Path, how: str, tmp_path: Path) -> None:
    """What another local user can leave where our folder was, after a cleaner removed it."""
    lib = folder / argv_secret.LIBRARY_NAME
    if how == "group-writable":
        folder.chmod(0o775)
    elif how == "listable":
        folder.chmod(0o755)
    elif how == "link":
        theirs = tmp_path / "theirs"
        shutil.copytree(folder, theirs)
        shutil.rmtree(folder)
        folder.symlink_to(theirs)
    elif how == "foreign folder":
        os.chown(folder, 65534, 65534)
    elif how == "foreign library":
        os.chown(lib, 65534, 65534)
    elif how == "library link":
        theirs = tmp_path / "theirs.so"
        shutil.copy(lib, theirs)
        lib.unlink()
        lib.symlink_to(theirs)


@pytest.mark.parametrize("how", ["group-writable", "listable", "link", "foreign folder", "foreign library",
                                 "library link"])
def test_a_library_whose_folder_is_no_longer_ours_alone_is_built_anew(monkeypatch, tmp_path, how):
    if how.startswith("foreign") and os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    monkeypatch.setattr(argv_secret, "_built", None)
    first = argv_secret.process_library()
    _replace_folder(first.parent, how, tmp_path)
    try:
        again = argv_secret.process_library()
        assert again.parent != first.parent and again.is_file()
        st = os.lstat(again.parent)
        assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700
        assert argv_secret.process_library() == again  # and kept while it stays ours
    finally:  # the exit-time removal refuses a link in the folder's place (as it should): not left in /tmp
        if first.parent.is_symlink():
            first.parent.unlink()


def test_cc_with_a_wrapper_is_split_as_a_shell_would(monkeypatch, tmp_path):
    # CC="ccache gcc": a program and its arguments, not one program's name.
    monkeypatch.setenv("CC", f"{shutil.which('env')} cc")
    assert argv_secret.compiler() == [shutil.which("env"), "cc"]
    assert argv_secret.build_library(tmp_path).is_file()
    monkeypatch.setenv("CC", "no-such-ccache cc")
    assert argv_secret.compiler() is None
    with pytest.raises(S2Error, match=r"needs a C compiler \(cc\) here"):
        argv_secret.build_library(tmp_path)


def test_a_compiler_that_cannot_run_is_one_line(monkeypatch, tmp_path):
    broken = tmp_path / "cc"
    broken.write_text("#!/no/such/interpreter\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.raises(S2Error, match=f"^{broken} could not build argv_secret.c: No such file or directory$"):
        argv_secret.build_library(tmp_path)
