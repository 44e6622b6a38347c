"""Faces in photos: dlib's face detector (its CNN detector where dlib was built with CUDA, its HOG detector on the
CPU), its 5-point landmark model and its 128-d face descriptor network (`face-recognition-models` ships the
three, so this works offline), with no Ray in it: the Serve app's `FaceFinder` deployment, a bulk job's pool and
the command's own process all run this class.

Two faces of one person are usually under 0.6 apart (euclidean) in the descriptor's space; of two people, over it.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass

import numpy as np

from ray_pipeline.core.errors import UserFacingError

MIN_FACE_PX = 40  # a face smaller than this (its box's side, in the picture looked at) is too small to describe
MIN_SCORE = 0.3  # HOG detections scoring below this were, in the tests' photos, never faces (a hand, a patch)
SAME_PERSON = 0.6  # dlib's threshold: faces nearer than this are taken for one person


@dataclass(frozen=True)
class Face:
    """One face found: its box as fractions of the picture as shown (left, top, right, bottom: at any size of the
    photo the same face), how sure the detector was, and its descriptor (128 float32)."""

    box: tuple[float, float, float, float]
    score: float
    descriptor: np.ndarray


@dataclass(frozen=True)
class FacesFound:
    """What a photo holds: the faces described, and how many more were too small to describe."""

    faces: list[Face]
    too_small: int = 0


def model_file(name: str) -> str:
    """A dlib model file of `face-recognition-models`, found without importing the package (its `__init__` needs
    setuptools' pkg_resources, gone from new environments)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise UserFacingError("finding faces needs dlib's models: pip install face-recognition-models dlib-bin")
    return os.path.join(list(spec.submodule_search_locations)[0], "models", name)


class FaceFinder:
    """The three dlib models, loaded once (about 0.5 s); `find` gives the faces of a picture."""

    def __init__(self):
        try:
            import dlib
        except ImportError:
            raise UserFacingError("finding faces needs dlib: pip install dlib-bin face-recognition-models") from None
        self.device = "cuda" if dlib.DLIB_USE_CUDA and dlib.cuda.get_num_devices() > 0 else "cpu"
        if self.device == "cuda":
            cnn = dlib.cnn_face_detection_model_v1(model_file("mmod_human_face_detector.dat"))
            self._detect = lambda picture: [(found.rect, float(found.confidence)) for found in cnn(picture, 0)]
        else:
            hog = dlib.get_frontal_face_detector()

            def detect(picture):
                rects, scores, _ = hog.run(picture, 0, 0.0)
                return list(zip(rects, scores))

            self._detect = detect
        self._landmarks = dlib.shape_predictor(model_file("shape_predictor_5_face_landmarks.dat"))
        self._describe = dlib.face_recognition_model_v1(model_file("dlib_face_recognition_resnet_model_v1.dat"))

    def find(self, picture: np.ndarray) -> FacesFound:
        """The faces in an upright RGB picture ((H, W, 3) uint8), most certain first."""
        picture = np.ascontiguousarray(picture)
        height, width = picture.shape[:2]
        faces, too_small = [], 0
        for rect, score in sorted(self._detect(picture), key=lambda found: -found[1]):
            if score < MIN_SCORE:
                continue
            left, top = max(0, rect.left()), max(0, rect.top())  # a face at the edge has a box that leaves the picture
            right, bottom = min(width, rect.right()), min(height, rect.bottom())
            if min(rect.width(), rect.height()) < MIN_FACE_PX:
                too_small += 1
                continue
            descriptor = np.asarray(self._describe.compute_face_descriptor(picture, self._landmarks(picture, rect)),
                                    np.float32)
            faces.append(Face((left / width, top / height, right / width, bottom / height), round(float(score), 3),
                              descriptor))
        return FacesFound(faces, too_small)
