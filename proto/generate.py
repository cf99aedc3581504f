"""Regenerate chronik_trio/pb/*_pb2.py from proto/*.proto.

Run from anywhere: `python proto/generate.py` (needs grpcio-tools, pinned in the `test` extra).
`python proto/generate.py --check` exits 1 if the committed code differs from a fresh build
(tests/test_proto_current.py runs it).
"""

from __future__ import annotations

import filecmp
import pathlib
import sys
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "chronik_trio" / "pb"


def _generate(out_dir: pathlib.Path) -> list[str]:
    from grpc_tools import protoc

    sources = sorted(p.name for p in PROTO_DIR.glob("*.proto"))
    args = ["protoc", f"-I{PROTO_DIR}", f"--python_out={out_dir}", *sources]
    if protoc.main(args) != 0:
        raise SystemExit(f"protoc failed: {' '.join(args)}")
    # Generated modules import each other as top-level modules; make them package-relative.
    modules = [s.removesuffix(".proto") + "_pb2" for s in sources]
    for path in out_dir.glob("*_pb2.py"):
        text = path.read_text()
        for mod in modules:
            text = text.replace(f"\nimport {mod} as ", f"\nfrom . import {mod} as ")
        path.write_text(text)
    return [m + ".py" for m in modules]


def main(argv: list[str]) -> int:
    if "--check" in argv:
        with tempfile.TemporaryDirectory() as tmp:
            files = _generate(pathlib.Path(tmp))
            stale = [f for f in files if not (OUT_DIR / f).exists()
                     or not filecmp.cmp(OUT_DIR / f, pathlib.Path(tmp) / f, shallow=False)]
            if stale:
                print(f"stale generated code: {stale}; run `python proto/generate.py`")
                return 1
        return 0
    _generate(OUT_DIR)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
