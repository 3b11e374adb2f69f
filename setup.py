"""Build step for the optional native decoder (the Rust crate in `native/`).

Package metadata lives in pyproject.toml. This file only adds the decoder as a build step:
with `cargo` on the PATH, `pip install .` (or `pip install -e .`) runs `cargo build --release
--offline` (the crate has no dependencies, so no registry is needed) and places the library
in the package as `pomabotd/engine/kernels/_native_decoder*.so`, loaded through ctypes; a
build that fails fails the installation. Without cargo the step is skipped with a note and
pomabotd decodes with msgspec. `POMABOTD_BUILD_NATIVE=0` skips it even where cargo exists.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
CRATE = HERE / "native"
LIBRARY = {"darwin": "libpomabotd_native.dylib", "win32": "pomabotd_native.dll"}.get(
    sys.platform, "libpomabotd_native.so")


class CargoLibrary(Extension):
    """A C-ABI library built by cargo from `native/`; not a Python extension module."""

    def __init__(self, name: str) -> None:
        super().__init__(name, sources=[])


class BuildNative(build_ext):
    """build_ext that builds `CargoLibrary` entries with cargo, or skips them without it."""

    def run(self) -> None:
        cargo = shutil.which("cargo")
        skip = os.environ.get("POMABOTD_BUILD_NATIVE", "").strip().lower() in {"0", "no", "false"}
        if cargo is None or skip:
            why = "POMABOTD_BUILD_NATIVE=0" if skip else "cargo is not on the PATH"
            print(f"pomabotd: not building the native decoder ({why}); "
                  "workers will decode with msgspec", file=sys.stderr)
            self.extensions = [e for e in self.extensions if not isinstance(e, CargoLibrary)]
        super().run()

    def build_extension(self, ext: Extension) -> None:
        if not isinstance(ext, CargoLibrary):
            super().build_extension(ext)
            return
        command = ["cargo", "build", "--release", "--offline", "--manifest-path",
                   str(CRATE / "Cargo.toml")]
        print("pomabotd: building the native decoder: " + " ".join(command), file=sys.stderr)
        subprocess.run(command, check=True)
        built = CRATE / "target" / "release" / LIBRARY
        destination = Path(self.get_ext_fullpath(ext.name))
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(built, destination)


setup(
    ext_modules=[CargoLibrary("pomabotd.engine.kernels._native_decoder")],
    cmdclass={"build_ext": BuildNative},
)
