"""The README picture: one frame of a run's ``overlay.mp4`` (masks, boxes, ``prompt #id score``), as a PNG.

    python tools/readme_figure.py runs/demo docs/demo_overlay.png [--frame N] [--scale 2]

Without ``--frame``: the frame with the most tracked instances in ``tracks.txt`` (the earliest such frame).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2

from sam3video.export import read_mot
from sam3video.export.atomic import atomic_path
from sam3video.export.outputs import OUTPUT_NAMES
from sam3video.sources.loader import open_video


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="output folder of `sam3video track`")
    parser.add_argument("out", type=Path, help="PNG to write")
    parser.add_argument("--frame", type=int, help="0-based frame index")
    parser.add_argument("--scale", type=float, default=2.0, help="upscaling for the page (default 2)")
    args = parser.parse_args(argv)
    tracks = read_mot(args.run / OUTPUT_NAMES["mot"])
    index = args.frame
    if index is None:
        index = max(sorted(tracks), key=lambda t: len(tracks[t]), default=0)
    frame = next((f for f in open_video(args.run / OUTPUT_NAMES["overlay"]) if f.index == index), None)
    if frame is None:
        raise SystemExit(f"{args.run / OUTPUT_NAMES['overlay']} has no frame {index}")
    image = frame.image
    image = cv2.resize(image, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_NEAREST)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    ok, png = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise SystemExit("could not encode the PNG")
    with atomic_path(args.out) as tmp:
        tmp.write_bytes(png.tobytes())
    print(f"frame {index}: {len(tracks.get(index, []))} tracked instances -> {args.out}")


if __name__ == "__main__":
    main()
