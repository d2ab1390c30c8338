"""Builds the wheel: cargo compiles the repository's crate as a plain C library (no Python
binding: the package calls the C ABI through ctypes) and it is shipped as
``espinnet/libespinnet.so``, the shipped model inside it.

Built without the command line's features, and with HDF5 and zlib compiled from their
sources into it (feature ``hdf5-static``: CMake 3.26+ at build time, which the build
requirements bring), the library needs nothing beyond glibc; ONNX Runtime is loaded at run
time from the ``onnxruntime`` package.
"""

import os
import re
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools_rust import Binding, RustExtension, Strip
from setuptools_rust.build import build_rust

ROOT = Path(__file__).resolve().parent.parent.parent
LIBRARY = {"darwin": "libespinnet.dylib", "win32": "espinnet.dll"}.get(sys.platform, "libespinnet.so")


def crate_version():
    text = (ROOT / "Cargo.toml").read_text(encoding="utf-8")
    return re.search(r'^version\s*=\s*"([^"]+)"', text, re.MULTILINE).group(1)


class build_library(build_rust):
    """Ships the library under its own name rather than a CPython extension's."""

    def get_dylib_ext_path(self, ext, target_fname):
        return os.path.join(os.path.dirname(super().get_dylib_ext_path(ext, target_fname)), LIBRARY)


class bdist_any_python(bdist_wheel):
    """The library does not link to Python: one wheel serves every Python 3."""

    def get_tag(self):
        return ("py3", "none", super().get_tag()[2])


# Library-only builds share one target directory (the CMake package's too), apart from
# the command line's `target/release`.
env = dict(os.environ)
env.setdefault("CARGO_TARGET_DIR", str(ROOT / "target" / "package"))

setup(
    version=crate_version(),
    rust_extensions=[
        RustExtension(
            "espinnet.libespinnet",
            path=str(ROOT / "Cargo.toml"),
            binding=Binding.NoBinding,
            args=["--no-default-features", "--features", "hdf5-static"],
            strip=Strip.Debug,
            debug=False,  # editable installs too: the engines are unusable unoptimised
            env=env,
        )
    ],
    cmdclass={"build_rust": build_library, "bdist_wheel": bdist_any_python},
)
