"""Summarise `cuobjdump --dump-sass` output per kernel: tensor-core instructions, local memory."""
import re
import sys
from collections import Counter

OPS = ("HGMMA", "IGMMA", "QGMMA", "HMMA", "IMMA", "LDL", "STL", "UTMALDG", "SYNCS")


def main(path: str) -> None:
    kernel, counts = None, {}
    for line in open(path, errors="replace"):
        m = re.search(r"Function : (\S+)", line)
        if m:
            kernel = m.group(1)
            counts[kernel] = Counter()
            continue
        if kernel is None:
            continue
        for op in OPS:
            if re.search(rf"\b{op}\b", line):
                counts[kernel][op] += 1
    spills = [k for k, c in counts.items() if c["LDL"] or c["STL"]]
    print(f"SASS: {len(counts)} kernels; with local memory (LDL/STL): {len(spills)}")
    for k in spills:
        print(f"  local memory in {k}: {dict(counts[k])}")
    for k, c in counts.items():
        mma = {op: c[op] for op in ("HGMMA", "IGMMA", "QGMMA", "HMMA", "IMMA") if c[op]}
        if mma:
            print(f"  {k}: {mma}")


if __name__ == "__main__":
    main(sys.argv[1])
