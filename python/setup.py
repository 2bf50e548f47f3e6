"""Builds the pachagent package, generating its gRPC stubs from the repository's proto/ with grpcio-tools.

The stubs (``pachagent/v1/agent_pb2.py``, ``agent_pb2_grpc.py`` and their ``.pyi``) are written into the build
directory, never into the source tree, so the package always matches the proto it was built from. The installed
package requires at least the grpcio and protobuf versions that generated them: generated code refuses older
runtimes.
"""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
PROTO = Path("pachagent") / "v1" / "agent.proto"


def proto_root() -> Path:
    """The directory holding pachagent/v1/agent.proto: python/proto in an sdist, else the repository's proto/."""
    for root in (HERE / "proto", HERE.parent / "proto"):
        if (root / PROTO).is_file():
            return root
    raise SystemExit(
        f"cannot find {PROTO} next to {HERE}: build this package from the pachagent repository "
        "(pip install ./python from its top directory)"
    )


def runtime_requirements() -> list:
    """grpcio and protobuf at least as new as the ones whose code generator made the stubs."""
    from importlib.metadata import version

    from google import protobuf

    grpc_version = version("grpcio-tools")
    protobuf_major = int(protobuf.__version__.split(".")[0])
    return [
        f"grpcio>={grpc_version}",
        f"protobuf>={protobuf.__version__},<{protobuf_major + 1}",
        "pachyderm-sdk>=2.12,<3",
    ]


class BuildPyWithStubs(build_py):
    """build_py, then protoc into the build directory."""

    def run(self) -> None:
        super().run()
        from importlib.resources import files

        from grpc_tools import protoc

        out = Path(self.build_lib)
        root = proto_root()
        well_known = str(files("grpc_tools") / "_proto")
        args = [
            "grpc_tools.protoc",
            f"-I{root}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--pyi_out={out}",
            f"--grpc_python_out={out}",
            str(root / PROTO),
        ]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {root / PROTO}")
        (out / "pachagent" / "v1" / "__init__.py").write_text(
            '"""Stubs generated at build time from proto/pachagent/v1/agent.proto; do not edit."""\n'
        )


setup(install_requires=runtime_requirements(), cmdclass={"build_py": BuildPyWithStubs})
