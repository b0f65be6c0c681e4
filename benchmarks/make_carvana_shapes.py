"""Write a Carvana-layout folder of ``shapes`` scenes, so the segmentation benchmarks run the
real-file path (JPEG photographs, palette-GIF masks, views grouped by car) without Kaggle's data.

    .venv/bin/python benchmarks/make_carvana_shapes.py --out /tmp/carvana-shapes [--cars 250 --views 4]
    onnx-run --optics metasurface --task segmentation --dataset carvana --set task.data_dir=/tmp/carvana-shapes

Kaggle's layout: ``train/<car>_<view>.jpg`` and ``train_masks/<car>_<view>_mask.gif`` (index 0
black, 1 white). Each image is one ``shapes`` scene at ``--height`` x ``--width`` px (Carvana's
2:3 aspect by default), drawn from ``(seed, car, view)``: the views of a car are independent
scenes, so the car grouping decides only which images share a split. Images are JPEG quality
90, as Carvana's are JPEGs: the masks stay exact, the images carry compression artefacts.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from onnx_run_tasks_segmentation.carvana import write_carvana_folder
from onnx_run_tasks_segmentation.shapes import render_shapes_sample


def carvana_shapes(*, cars: int, views: int, size: tuple[int, int], seed: int = 0):
    """``(stem, image uint8, mask)`` of each view of each car: one ``shapes`` scene from
    ``(seed, car, view)``."""
    for car in range(cars):
        for view in range(views):
            sample = render_shapes_sample(np.random.default_rng([seed, car, view]), size)
            yield f"{car:012x}_{view + 1:02d}", np.round(sample["image"] * 255).astype(np.uint8), sample["mask"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cars", type=int, default=250)
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=96)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    pairs = carvana_shapes(cars=args.cars, views=args.views, size=(args.height, args.width), seed=args.seed)
    root = write_carvana_folder(args.out, pairs)
    print(f"wrote {args.cars * args.views} image/mask pairs ({args.cars} cars x {args.views} views) under {root}")


if __name__ == "__main__":
    main()
