#!/usr/bin/env python3
"""Generate the Python API code from proto/ (the single source of truth).

    python tools/gen_proto.py          # rewrite client/keeptime/{v1,criu}/*_pb2*.py(i)
    python tools/gen_proto.py --check  # exit 1 when the committed code is stale

Needs grpcio-tools at the version pinned in pyproject.toml's test extra, so
the output is byte-for-byte reproducible.
"""
import argparse
import filecmp
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTO_ROOT = os.path.join(ROOT, "proto")
# proto file -> (folder its package is generated under (the import root),
#                whether it declares a gRPC service)
TARGETS = {
    "keeptime/v1/keeptime.proto": (os.path.join(ROOT, "client"), True),
    "keeptime/criu/timens.proto": (os.path.join(ROOT, "client"), False),
    "keeptime/criu/dump.proto": (os.path.join(ROOT, "client"), False),
}
MESSAGE_SUFFIXES = ("_pb2.py", "_pb2.pyi")
GRPC_SUFFIXES = ("_pb2_grpc.py",)


def generate(proto: str, out_root: str, grpc: bool) -> None:
    """Run protoc on one proto file, writing under out_root."""
    import importlib.resources

    from grpc_tools import protoc  # imported late: only a development dependency

    well_known = importlib.resources.files("grpc_tools") / "_proto"   # google/protobuf/descriptor.proto
    args = [
        "protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        *([f"--grpc_python_out={out_root}"] if grpc else []),
        proto,
    ]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed for {proto}")


def generated_files(proto: str, grpc: bool) -> list[str]:
    """Paths, relative to the import root, that protoc writes for proto."""
    stem = proto[: -len(".proto")]
    return [stem + suffix for suffix in MESSAGE_SUFFIXES + (GRPC_SUFFIXES if grpc else ())]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare, do not write")
    args = parser.parse_args()
    stale = []
    for proto, (out_root, grpc) in TARGETS.items():
        if not args.check:
            generate(proto, out_root, grpc)
            continue
        with tempfile.TemporaryDirectory() as tmp:
            generate(proto, tmp, grpc)
            for rel in generated_files(proto, grpc):
                committed = os.path.join(out_root, rel)
                fresh = os.path.join(tmp, rel)
                if not os.path.exists(committed) or not filecmp.cmp(committed, fresh, shallow=False):
                    stale.append(os.path.relpath(committed, ROOT))
    if stale:
        print("stale generated code (run python tools/gen_proto.py):", *stale, sep="\n  ")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
