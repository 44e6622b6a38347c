"""Costs: the expected seconds of a run with no cluster running, in the command's own process or on a local
Ray, from per-photo costs measured on a 2-core AMD EPYC (benchmarks/RESULTS.md, issue 29) and this machine's
cores and GPUs. The route takes the faster (`route.choose_route`); `benchmarks.cost_model` predicts with the
very same figures where the two cross on larger machines.

The two ways do the same work (read, hash, decode at reduced size, embed, write); they differ in what they
pay before the first photo, and in how far the work spreads. In this process the decoders run on threads,
which overlap each other and the model because the decoders let go of Python's lock, but no further than
about THREAD_SCALING cores: past that, the lock each file's Python steps take holds them back. A local Ray
spreads decoding over processes, one a core, and pays for starting them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from ray_pipeline.core.formats import RAW_EXTENSIONS, extension_of

# Seconds before the first photo (measured here: benchmarks.laptop's timelines).
PROCESS_START_S = 3.0  # torch and OpenCLIP imported, the model loaded, in the command's own process
LOCAL_RAY_START_S = 15.0  # a local Ray started, the job's actors started, their models loaded
THREAD_SCALING = 8  # cores the decoding threads of one process keep busy at most (estimate: not measurable on 2 cores)
RAY_EFFICIENCY = 0.9  # the share of its cores a local Ray's actors keep busy (its own tasks take the rest)
# CPU-seconds to read, hash and decode one photo, by extension (RESULTS.md, issue 14, benchmarks.decode_cost; the
# read of a 12 MP JPEG, 3.5 ms, included); RAW files are taken half with a preview, half without.
JPEG_DECODE_S = 0.030
DECODE_S = {"jpg": JPEG_DECODE_S, "jpeg": JPEG_DECODE_S, "heic": 0.22, "heif": 0.22, "hif": 0.22, "avif": 0.22, "png": 0.05}
RAW_DECODE_S = 0.145
OTHER_DECODE_S = 0.05
# CPU-seconds to embed one photo with ViT-B-32 (RESULTS.md, issue 29: the model alone on 2 cores): the tower's
# cost in each precision; on a GPU the model is not what bounds a run of one machine.
EMBED_S = {"fp32": 0.131, "bf16": 0.055, "fp16": 0.0}


@dataclass(frozen=True)
class Machine:
    cpus: int
    gpus: int

    @classmethod
    def here(cls) -> Machine:
        """This machine, told without importing torch or Ray: the cores this process may use, and the GPUs
        NVIDIA's driver lists."""
        try:
            gpus = len(os.listdir("/proc/driver/nvidia/gpus"))
        except OSError:
            gpus = 0
        return cls(cpus=len(os.sched_getaffinity(0)), gpus=gpus)


def decode_seconds(paths: list[str]) -> float:
    """CPU-seconds to read and decode these photos."""
    return sum(RAW_DECODE_S if extension_of(path) in RAW_EXTENSIONS else DECODE_S.get(extension_of(path), OTHER_DECODE_S)
               for path in paths)


@dataclass(frozen=True)
class Expected:
    """The expected seconds of each way."""

    in_process: float
    local_ray: float


def expected(decode_s: float, files: int, machine: Machine, precision: str) -> Expected:
    """The seconds `files` photos take, `decode_s` the CPU-seconds of their decoding, in each way."""
    embed_s = files * EMBED_S["fp16" if machine.gpus else precision]
    work = decode_s + embed_s
    return Expected(in_process=PROCESS_START_S + work / min(machine.cpus, THREAD_SCALING),
                    local_ray=LOCAL_RAY_START_S + work / (machine.cpus * RAY_EFFICIENCY))
