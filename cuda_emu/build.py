"""Building the emulated device: the runtime library and one shared library per kernel source.

Both are compiled by the host C++ compiler (``$CXX``, default ``g++``) on first use and cached
(:func:`cache_folder`) by the SHA-256 of everything that goes into them (sources, header,
flags, compiler version), so a changed kernel, define or header is rebuilt and an unchanged one
is loaded at once. A build writes to a temporary file and renames it into place, so processes
that build the same module at once never load a half-written library.

A kernel module is the ``.cu`` text exactly as CuPy would compile it (the loader's ``#define``
lines, then the file), compiled as C++ with ``cuda_emu.h`` force-included and ThreadSanitizer's
instrumentation (every load and store calls the runtime), followed by generated lines that define
the dynamic shared-memory buffer and one launch entry per ``__global__`` function. The object is
linked without the sanitizer's own runtime: the emulator's runtime library defines its hooks.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import platformdirs

HERE = Path(__file__).resolve().parent
# The emulator's build cache: ``$REPRO_CUDA_EMU_CACHE``, else ``cuda_emu/`` in the suite's cache
# (``$REPRO_CACHE``, else the user's cache folder), so one variable moves every cache of a run.
CACHE_VARIABLES = ("REPRO_CUDA_EMU_CACHE", "REPRO_CACHE")
HEADER = HERE / "include" / "cuda_emu.h"
RUNTIME = HERE / "runtime.cpp"

COMPILE_FLAGS = ["-std=c++17", "-O2", "-g", "-fPIC", "-pthread"]
LINK_FLAGS = ["-shared", "-pthread"]
# Every load and store of the optimised code becomes a call (__tsan_read4, __tsan_write8, ...) into
# the runtime. ThreadSanitizer, not AddressSanitizer: ASan skips accesses it can prove in bounds
# (a __shared__ scalar, s[0]) and drops the store of a read-modify-write (a[i] += v) after
# checking the load, and the emulator must see each of them. No function entry/exit hooks.
# Scalar code only, so that each access is one thread's access, as in the CUDA source; no tail
# calls, so that a call into the runtime (an atomic, a barrier) returns into the kernel's own code,
# whose address names the source line; locals start as a pattern, not as zero.
KERNEL_FLAGS = ["-fsanitize=thread", "--param", "tsan-instrument-func-entry-exit=0", "-fno-tree-vectorize",
                "-fno-tree-slp-vectorize", "-fno-optimize-sibling-calls", "-ftrivial-auto-var-init=pattern", "-Wall",
                "-Werror=uninitialized", "-Werror=maybe-uninitialized", "-Wno-unused-function",
                "-Wno-unused-variable"]

GLOBAL_FUNCTION = re.compile(r"__global__\s+void\s+(\w+)\s*\(([^)]*)\)")
EXTERN_SHARED = re.compile(r"extern\s+__shared__[^;]*?(\w+)\s*\[\s*\]\s*;")


class BuildError(RuntimeError):
    """A kernel source could not be built: no host compiler, or the compiler's messages."""


def cache_folder() -> Path:
    """Where built libraries are kept (created on demand); see :data:`CACHE_VARIABLES`."""
    if os.environ.get(CACHE_VARIABLES[0]):
        folder = Path(os.environ[CACHE_VARIABLES[0]])
    else:
        folder = Path(os.environ.get(CACHE_VARIABLES[1]) or platformdirs.user_cache_dir("repro")) / "cuda_emu"
    folder = folder.expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@dataclass(frozen=True)
class KernelSignature:
    """A ``__global__`` function of a source: its name and its parameters' names, in order."""

    name: str
    parameters: tuple[str, ...]


def kernel_signatures(source: str) -> dict[str, KernelSignature]:
    """The ``__global__`` functions of a CUDA source, by name (parameter names read from the text)."""
    text = re.sub(r"//[^\n]*|/\*.*?\*/", " ", source, flags=re.S)
    signatures = {}
    for match in GLOBAL_FUNCTION.finditer(text):
        parameters = [p for p in (part.strip() for part in match[2].split(",")) if p and p != "void"]
        names = tuple(re.findall(r"(\w+)\s*$", p)[0] for p in parameters)
        signatures[match[1]] = KernelSignature(match[1], names)
    return signatures


def compiler() -> str:
    """The host C++ compiler (``$CXX`` or ``g++``); BuildError if there is none."""
    name = os.environ.get("CXX", "g++")
    path = shutil.which(name)
    if path is None:
        raise BuildError(f"the emulated CUDA device compiles kernels with a host C++ compiler, and {name!r} was not "
                          "found; install g++ (Debian: apt-get install g++) or point $CXX at one")
    return path


@functools.cache
def compiler_version(path: str) -> str:
    """What ``path --version`` prints (the first line names the compiler and its version)."""
    return subprocess.run([path, "--version"], capture_output=True, text=True, check=False).stdout


def _digest(*parts: str) -> str:
    sha = hashlib.sha256()
    for part in parts:
        sha.update(part.encode())
        sha.update(b"\0")
    return sha.hexdigest()[:24]


def _build(cxx: str, flags: list[str], target: Path, source_text: str, source_name: str, libraries: tuple = ()) -> None:
    """Compile ``source_text`` with ``flags``, then link it and ``libraries`` into ``target``, atomically.

    Two steps, so that -fsanitize=thread instruments the code without linking ThreadSanitizer's
    own runtime, which cannot be loaded into a running Python process.
    """
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".build-") as work:
        (Path(work) / source_name).write_text(source_text)
        # named relative to the build folder, so that __FILE__, compiler messages and the debug
        # line table name the source as the caller did, not a deleted temporary path
        for command in ([cxx, *flags, "-c", source_name, "-o", "module.o"],
                        [cxx, *LINK_FLAGS, "module.o", "-o", target.name, *libraries]):
            result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=work)
            if result.returncode:
                raise BuildError(f"the emulated CUDA device could not build {source_name}:\n"
                                  f"{result.stderr.strip()}")
        os.replace(Path(work) / target.name, target)


@functools.cache
def runtime_library() -> Path:
    """The runtime's shared library, built once per runtime source, header and compiler."""
    cxx = compiler()
    flags = [*COMPILE_FLAGS, f"-I{HEADER.parent}"]
    key = _digest(RUNTIME.read_text(), HEADER.read_text(), " ".join(flags + LINK_FLAGS), compiler_version(cxx))
    target = cache_folder() / f"libcuda_emu_runtime-{key}.so"
    if not target.exists():
        _build(cxx, flags, target, RUNTIME.read_text(), "runtime.cpp", ("-ldl",))
    return target


def module_library(code: str, name: str) -> Path:
    """The shared library of one CUDA source ``code`` (``name`` is its file name, for messages).

    Returns the cached library, building it first if needed; BuildError with the compiler's
    messages if the source does not compile.
    """
    signatures = kernel_signatures(code)
    if not signatures:
        raise BuildError(f"{name} defines no __global__ function")
    # The appended lines have a name of their own, so that no message points past the .cu file's end.
    tail = ["", '#line 1 "<cuda_emu launch entries>"', "EMU_DYNAMIC_SHARED_BUFFER",
            *(f"EMU_DYNAMIC_SHARED({shared})" for shared in sorted(set(EXTERN_SHARED.findall(code)))),
            *(f"EMU_KERNEL({kernel})" for kernel in signatures), ""]
    text = code + "\n".join(tail)
    runtime = runtime_library()
    cxx = compiler()
    flags = [*COMPILE_FLAGS, *KERNEL_FLAGS, "-x", "c++", "-include", str(HEADER)]
    key = _digest(text, HEADER.read_text(), " ".join(flags + LINK_FLAGS), runtime.name, compiler_version(cxx))
    stem = re.sub(r"\W", "_", Path(name).stem)
    target = cache_folder() / f"{stem}-{key}.so"
    if not target.exists():
        link = (f"-L{runtime.parent}", f"-l:{runtime.name}", f"-Wl,-rpath,{runtime.parent}")
        _build(cxx, flags, target, text, Path(name).name, link)
    return target
