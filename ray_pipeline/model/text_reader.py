"""Text in photos: PP-OCR's detection, orientation and recognition models run by ONNX Runtime
(`rapidocr-onnxruntime`, whose wheel carries the models, so it works offline), with no Ray in it: the Serve
app's `TextReader` deployment, a bulk job's pool and the command's own process all run this class.
"""

from __future__ import annotations

import logging
import os

import numpy as np

from ray_pipeline.core.errors import UserFacingError

MIN_SCORE = 0.5  # recognition confidence below which a line is dropped (RapidOCR's own default)

logger = logging.getLogger(__name__)


def cuda_available() -> bool:
    """Whether ONNX Runtime here can run on a GPU: its CUDA build is installed, and this process sees a GPU (one
    NVIDIA's driver lists, not hidden by CUDA_VISIBLE_DEVICES, as Ray hides them from a process given none)."""
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return False
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return os.path.isdir("/proc/driver/nvidia/gpus") and visible not in ("", "-1")


class TextReader:
    """The OCR models, loaded once (about 0.3 s); `read` gives the lines of text in a picture."""

    def __init__(self, threads: int | None = None):
        """`threads`: ONNX Runtime's threads per model (None: its default, every core)."""
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError:
            raise UserFacingError("reading the text in photos needs rapidocr-onnxruntime, which has no release for this "
                                  "Python yet (it runs on 3.11 and 3.12): install the project with one of those") from None

        self.device = "cuda" if cuda_available() else "cpu"
        cuda = self.device == "cuda"
        threads_given = {"intra_op_num_threads": threads} if threads else {}
        self.engine = RapidOCR(det_use_cuda=cuda, cls_use_cuda=cuda, rec_use_cuda=cuda, print_verbose=False, **threads_given)

    def read(self, picture: np.ndarray) -> list[str]:
        """The lines of text in an upright RGB picture ((H, W, 3) uint8), top to bottom, the words of a line
        left to right; [] where there is none."""
        bgr = np.ascontiguousarray(picture[:, :, ::-1])  # RapidOCR takes an array in OpenCV's channel order
        found, _ = self.engine(bgr)
        boxes = [(box, text.strip()) for box, text, score in (found or []) if float(score) >= MIN_SCORE and text.strip()]
        return [" ".join(text for _, text in row) for row in rows_of(boxes)]


def rows_of(boxes: list[tuple[list, str]]) -> list[list[tuple[list, str]]]:
    """Boxes of text ((four corners, text) each) as the lines they make: top to bottom, and in a line (boxes
    whose middles lie within half a height of each other) left to right."""
    def middle(box) -> float:
        return sum(y for _, y in box) / len(box)

    rows: list[list[tuple[list, str]]] = []
    for found in sorted(boxes, key=lambda found: middle(found[0])):
        height = max(y for _, y in found[0]) - min(y for _, y in found[0])
        if rows and abs(middle(found[0]) - middle(rows[-1][0][0])) <= height / 2:
            rows[-1].append(found)
        else:
            rows.append([found])
    return [sorted(row, key=lambda found: min(x for x, _ in found[0])) for row in rows]
