"""Rate-distortion evaluation: classical codec baselines, RD curves, BD-rate tables, CompressAI-layout results.

    curves = [evaluation.codec_rd_curve("/data/kodak", codec=c) for c in ("jpeg420", "jpeg2000", "webp")]
    rows = evaluation.rd_table(curves, anchor="jpeg420")
    evaluation.write_results(curves, "results/kodak", anchor="jpeg420")

Learned methods pass their curves in as the same `RDCurve`: `learned_rd_curve(images, {lmbda: codec, ...}, name)`
measures `Codec.compress` / `decompress` like the baselines; `curve_from_results` wraps means computed elsewhere;
`load_results` reads a CompressAI results JSON to overlay published curves. One codec in detail (real bpp against
the entropy model's estimate, quality, timing, JPEG at the same rate): `evaluate_codec(codec, images)`, `eval_table`.
"""

from jaxcomp.evaluation.codec_eval import eval_table, evaluate_codec
from jaxcomp.evaluation.codecs import BASELINES, Baseline, get_baseline
from jaxcomp.evaluation.rd import (
    DISTORTION_KEYS,
    EXTRA_DISTORTION_KEYS,
    RESULT_KEYS,
    Codec,
    RDCurve,
    codec_rd_curve,
    curve_from_results,
    image_quality,
    interpolate_at,
    learned_rd_curve,
    load_images,
    measure,
    rd_curve_from_points,
    rd_table,
)
from jaxcomp.evaluation.rd_run import learned_point, rd_run
from jaxcomp.evaluation.run import (
    end_of_training,
    evaluate_run,
    evaluate_state,
    report_path,
    scored_line,
    write_report,
)
from jaxcomp.evaluation.report import (
    curve_to_json,
    format_table,
    load_results,
    plot_rd,
    points_rows,
    write_results,
)

__all__ = [
    "BASELINES", "Baseline", "Codec", "DISTORTION_KEYS", "EXTRA_DISTORTION_KEYS", "RDCurve", "RESULT_KEYS", "codec_rd_curve",
    "curve_from_results", "curve_to_json", "eval_table", "evaluate_codec", "format_table", "get_baseline", "image_quality", "interpolate_at",
    "learned_rd_curve", "load_images", "load_results", "measure", "plot_rd", "points_rows", "rd_curve_from_points",
    "rd_table", "write_results", "end_of_training", "evaluate_run", "evaluate_state", "report_path", "scored_line",
    "write_report", "learned_point", "rd_run",
]
