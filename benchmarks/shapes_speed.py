"""Shapes-world generation speed: images per second at several sizes (batched and one by one).

Usage: python benchmarks/shapes_speed.py [--repeats 3] [--out benchmarks/out/shapes_speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from mmsec.data.shapes import ShapesWorld


def images_per_second(world: ShapesWorld, count: int, repeats: int) -> float:
    times = []
    for r in range(repeats):
        start = time.perf_counter()
        world.batch("train", r * count, count)
        times.append(time.perf_counter() - start)
    return count / statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/out/shapes_speed.json"))
    args = ap.parse_args()
    rows = []
    for size, count, second in [(32, 1024, 0.0), (32, 1024, 0.25), (64, 512, 0.25), (224, 64, 0.25)]:
        ips = images_per_second(ShapesWorld(image_size=size, second_object_prob=second), count, args.repeats)
        rows.append({"image_size": size, "second_object_prob": second, "batch": count, "images_per_s": round(ips, 1)})
    print(f"{'size':>5} {'p(second)':>10} {'batch':>6} {'images/s':>10}")
    for r in rows:
        print(f"{r['image_size']:>5} {r['second_object_prob']:>10} {r['batch']:>6} {r['images_per_s']:>10}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"benchmark": "shapes_speed", "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
