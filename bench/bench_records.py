#!/usr/bin/env python3
"""Cost of the freshness checks: hashing a model-sized file (sha256) against just reading it.

    python bench/bench_records.py [--mb 200] [--repeat 3]

A stage is skipped only after the files it relies on are hashed again (comflp_espnet.records),
so a check costs about one read of those files.  Prints the seconds of a plain read and of
``records.file_digest`` of the same file (warm page cache, best of --repeat), and their ratio.
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from comflp_espnet import records  # noqa: E402


def best_of(repeat, fn):
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200, help="file size in MB")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.pth"
        with open(path, "wb") as f:
            for _ in range(args.mb):
                f.write(os.urandom(1 << 20))

        def read():
            with open(path, "rb") as f:
                while f.read(1 << 20):
                    pass

        def digest():
            records._file_digests.clear()  # no memo: hash the file again, as a new process does
            records.file_digest(path)

        read()
        t_read = best_of(args.repeat, read)
        t_hash = best_of(args.repeat, digest)
    print(f"{args.mb} MB: read {t_read:.3f} s ({args.mb / t_read:.0f} MB/s), sha256 {t_hash:.3f} s "
          f"({args.mb / t_hash:.0f} MB/s); hash / read = {t_hash / t_read:.1f}")


if __name__ == "__main__":
    main()
