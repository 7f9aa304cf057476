"""Classical codec anchors on a folder of images (Kodak): PSNR / MS-SSIM at 0.25, 0.5 and 1.0 bpp, BD-rates, times.

    python benchmarks/codec_baselines.py ../shared/data/kodak --out /tmp/codec_baselines

Sweeps JPEG 4:2:0 and 4:4:4, JPEG 2000 (OpenJPEG 9/7 + colour transform), WebP and AVIF with the default parameters
of `jaxcomp.evaluation.BASELINES`; every rate is real (bytes of the encoded file). Quality at 0.25 / 0.5 / 1.0 bpp
is the mean curve interpolated linearly in log(bpp); BD-rates are against JPEG 4:2:0 (PCHIP). Encode / decode ms
are wall-clock means over every image and point, one thread, Pillow's codecs. Writes the table and the command into
the `codec_baselines` section of docs/benchmarks.md; `--out` also writes the CompressAI-layout JSON, CSVs and plots.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

RATES = (0.25, 0.5, 1.0)
# Figures quoted from shared/notes/performance.md (Pillow 13, Kodak, RGB PSNR) for the comparison column.
NOTES = {
    "jpeg420": ((24.6, 29.1, 32.7), (0.831, 0.944, 0.980)),
    "jpeg2000": ((29.3, 32.2, 36.0), (0.931, 0.962, 0.983)),
    "webp": ((28.5, 31.3, 35.1), (0.929, 0.963, 0.983)),
    "avif": ((29.6, 32.5, 36.1), (0.953, 0.977, 0.989)),
}


def _fmt(values, digits: int) -> str:
  return " / ".join("n/a" if v != v else f"{v:.{digits}f}" for v in values)


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  p.add_argument("folder", nargs="?", default="../shared/data/kodak")
  p.add_argument("--codecs", default="jpeg420,jpeg444,jpeg2000,webp,avif")
  p.add_argument("--max_images", type=int, default=0, help="use only the first N images (0: all)")
  p.add_argument("--out", default=None, help="also write JSON / CSV / plots here")
  p.add_argument("--no_write", action="store_true", help="print only, leave docs/benchmarks.md alone")
  args = p.parse_args()

  from benchmarks._report import machine_line, write_section  # noqa: PLC0415
  from jaxcomp import evaluation  # noqa: PLC0415

  images = evaluation.load_images(args.folder)
  if args.max_images:
    images = images[:args.max_images]
  curves = []
  t0 = time.perf_counter()
  for codec in args.codecs.split(","):
    curves.append(evaluation.codec_rd_curve(images, codec, progress=lambda s: print(s, flush=True)))
  elapsed = time.perf_counter() - t0
  rows = evaluation.rd_table(curves, anchor=0, method="pchip")

  lines = [
      "| codec | points | PSNR RGB at 0.25 / 0.5 / 1.0 bpp | PSNR YUV at 0.25 / 0.5 / 1.0 | "
      "MS-SSIM at 0.25 / 0.5 / 1.0 | BD-rate PSNR / MS-SSIM vs first | encode / decode ms | "
      "performance.md PSNR; MS-SSIM |",
      "|---|---|---|---|---|---|---|---|",
  ]
  for c, row in zip(curves, rows):
    ref = NOTES.get(c.name)
    lines.append(
        f"| {c.description} | {len(c)} | {_fmt(evaluation.interpolate_at(c, 'psnr-rgb', RATES), 1)} | "
        f"{_fmt(evaluation.interpolate_at(c, 'psnr-yuv', RATES), 1)} | "
        f"{_fmt(evaluation.interpolate_at(c, 'ms-ssim-rgb', RATES), 3)} | "
        f"{_fmt([row['bd-rate psnr-rgb'], row['bd-rate ms-ssim-rgb']], 1)} % | "
        f"{row['encoding_time ms']:.1f} / {row['decoding_time ms']:.1f} | "
        f"{(_fmt(ref[0], 1) + '; ' + _fmt(ref[1], 3)) if ref else '—'} |")
  table = "\n".join(lines)
  print(table)
  cmd = "python benchmarks/codec_baselines.py " + " ".join(sys.argv[1:])
  body = (f"## Codec baselines ({len(images)} images of `{os.path.basename(os.path.normpath(args.folder))}`)\n\n"
          f"Command: `{cmd}` ({elapsed:.0f} s; {machine_line()}).\n\n"
          "Real rates from the encoded bytes; quality at a rate is the mean curve interpolated in log(bpp); "
          "PSNR YUV is (4Y+U+V)/6 in BT.601 full range; MS-SSIM channel-averaged, 5 scales; BD-rates PCHIP against "
          "the first row; times are wall-clock means over all images and points (decode includes "
          "`jaxcomp.data.decode_image`'s canonicalisation), inflated when other jobs share the cores: compare codecs "
          "within one run, not with other machines.\n\n" + table)
  if args.out:
    evaluation.write_results(curves, args.out, anchor=0)
    print(f"results written to {args.out}")
  if not args.no_write:
    write_section("codec_baselines", body)


if __name__ == "__main__":
  main()
