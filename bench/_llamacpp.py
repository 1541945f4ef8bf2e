"""llama.cpp as a bench reference, built once from the ``llama-cpp-python`` sdist and cached
under ``~/.cache/attnlab/llama-server/<version>``; never a dependency of attnlab.

The sdist (``pip download --no-binary``) vendors llama.cpp's sources. From it the benches
build, on first use, either ``llama-server`` (cmake, for ``bench/serve.py``) or a
``llama-cpp-python`` wheel (``pip wheel``, for ``bench/pretrained.py``), both with
``GGML_NATIVE`` so the kernels use this CPU's instructions, each a few minutes on 2 cores.
The wheel is installed with ``pip install --target`` into a private folder next to it (with
those of its pure-Python requirements the running interpreter lacks), never into the
project's environment; ``import_llama_cpp`` puts that folder last on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from types import ModuleType

VERSION = "0.3.36"
LLAMA_CPP_PYTHON = f"llama-cpp-python=={VERSION}"
CACHE = Path.home() / ".cache" / "attnlab" / "llama-server" / VERSION
WHEELS = CACHE / "wheel"  # the built llama_cpp_python wheel
SITE = CACHE / "python"  # pip install --target: llama_cpp and its missing requirements
# the wheel's requirements (its METADATA), as import names; only the missing ones go to SITE
REQUIREMENTS = {"numpy": "numpy", "diskcache": "diskcache", "jinja2": "jinja2"}
REQUIREMENTS["typing_extensions"] = "typing-extensions"
CMAKE_FLAGS = [
    "-DGGML_NATIVE=ON",
    "-DLLAMA_CURL=OFF",
    "-DLLAMA_BUILD_TESTS=OFF",
    "-DLLAMA_BUILD_EXAMPLES=OFF",
]


def _say(message: str) -> None:
    print(f"bench/_llamacpp: {message}", file=sys.stderr, flush=True)


def sdist() -> Path:
    """The cached ``llama_cpp_python-<version>.tar.gz``, downloaded if needed."""
    found = sorted(CACHE.glob(f"llama_cpp_python-{VERSION}.tar.gz"))
    if found:
        return found[0]
    CACHE.mkdir(parents=True, exist_ok=True)
    pip = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
    subprocess.run([*pip, LLAMA_CPP_PYTHON, "-d", str(CACHE)], check=True)
    return next(CACHE.glob(f"llama_cpp_python-{VERSION}.tar.gz"))


def build_llama_server() -> Path | None:
    """The cached llama-server binary, built from the sdist's vendored llama.cpp if needed;
    None (with the reason on stderr) when it cannot be built."""
    binary = CACHE / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    cmake = shutil.which("cmake")
    if cmake is None:
        _say("cmake not found; cannot build llama-server")
        return None
    _say(f"building llama-server from the {LLAMA_CPP_PYTHON} sdist (minutes, once)...")
    archive = sdist()
    if not any(CACHE.glob(f"llama_cpp_python-{VERSION}/vendor/llama.cpp")):
        with tarfile.open(archive) as tar:
            tar.extractall(CACHE, filter="data")
    source = next(CACHE.glob(f"llama_cpp_python-{VERSION}/vendor/llama.cpp"))
    configure = [cmake, "-S", str(source), "-B", str(CACHE / "build")]
    configure += ["-DCMAKE_BUILD_TYPE=Release", "-DLLAMA_OPENSSL=OFF", *CMAKE_FLAGS]
    if shutil.which("ninja"):
        configure += ["-G", "Ninja"]
    try:
        subprocess.run(configure, check=True, stdout=subprocess.DEVNULL)
        build = [cmake, "--build", str(CACHE / "build"), "--target", "llama-server", "-j", "2"]
        subprocess.run(build, check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as err:
        _say(f"building llama-server failed: {err}")
        return None
    return binary if binary.exists() else None


def build_wheel() -> Path | None:
    """The cached llama_cpp_python wheel, built from the sdist if needed (``pip wheel``,
    minutes, once); None (with the reason on stderr) when the build fails."""
    found = sorted(WHEELS.glob(f"llama_cpp_python-{VERSION}-*.whl"))
    if found:
        return found[0]
    archive = sdist()
    _say(f"building the {LLAMA_CPP_PYTHON} wheel (minutes, once)...")
    staging = CACHE / "wheel-build"
    shutil.rmtree(staging, ignore_errors=True)
    flags = [*CMAKE_FLAGS, "-DLLAVA_BUILD=OFF", "-DLLAMA_BUILD_TOOLS=OFF"]
    flags.append("-DLLAMA_BUILD_SERVER=OFF")
    env = dict(os.environ, CMAKE_ARGS=" ".join(flags), CMAKE_BUILD_PARALLEL_LEVEL="2")
    pip = [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(staging)]
    done = subprocess.run([*pip, str(archive)], env=env, capture_output=True, text=True)
    built = sorted(staging.glob("llama_cpp_python-*.whl"))
    if done.returncode != 0 or not built:
        _say(f"building the wheel failed (pip exit {done.returncode}): {done.stderr[-2000:]}")
        return None
    WHEELS.mkdir(parents=True, exist_ok=True)
    wheel = WHEELS / built[0].name
    built[0].replace(wheel)
    shutil.rmtree(staging, ignore_errors=True)
    return wheel


def install() -> Path | None:
    """The private folder holding an importable ``llama_cpp`` (built and installed there if
    needed); None when that failed."""
    if (SITE / "llama_cpp" / "__init__.py").exists():
        return SITE
    wheel = build_wheel()
    if wheel is None:
        return None
    missing = [pip for name, pip in REQUIREMENTS.items() if importlib.util.find_spec(name) is None]
    command = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(SITE)]
    done = subprocess.run([*command, str(wheel), *missing], capture_output=True, text=True)
    if done.returncode != 0:
        _say(f"installing {wheel.name} into {SITE} failed: {done.stderr[-2000:]}")
        shutil.rmtree(SITE, ignore_errors=True)
        return None
    return SITE


def import_llama_cpp() -> ModuleType:
    """``llama_cpp`` from the private folder (built on first use); RuntimeError if it cannot
    be built or installed. The folder goes last on ``sys.path``, so the interpreter's own
    packages (numpy) win."""
    folder = install()
    if folder is None:
        raise RuntimeError(f"{LLAMA_CPP_PYTHON} could not be built or installed (see above)")
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    import llama_cpp

    return llama_cpp
