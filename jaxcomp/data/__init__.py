"""The one input pipeline: canonical decoding, tfds folder / sample / named datasets, grain loader, degradations.

See docs/data.md. Public API: `read_image`, `decode_image`, `get_source`, `make_loader`, `load_eval_images` (whole
images for evaluation) and `jaxcomp.data.transforms`.
"""

from jaxcomp.data.builders import (
    ImageSource,
    JaxcompImageFolder,
    assign_splits,
    build_folder,
    default_data_dir,
    get_source,
    sample_files,
)
from jaxcomp.data.decode import canonicalize_array, decode_image, read_image
from jaxcomp.data.images import EvalImages, load_eval_images
from jaxcomp.data.loader import LoaderOptions, RandomCropFlip, make_loader, pad_to_at_least

__all__ = [
    "EvalImages", "ImageSource", "JaxcompImageFolder", "LoaderOptions", "RandomCropFlip", "assign_splits",
    "build_folder", "canonicalize_array", "decode_image", "default_data_dir", "get_source", "load_eval_images",
    "make_loader", "pad_to_at_least", "read_image", "sample_files",
]
