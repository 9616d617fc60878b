"""TensorRT INT8 entropy calibrator over a recorded calibration set (TensorRT 10.x + cuda-python).

Implicit quantization is TensorRT 10.x only (TensorRT 11 removed the calibrator API) and is used
only by ``build_engines.py --weak-typing --precision int8 --calibration DIR``; the default int8
path is the explicit Q/DQ graph of ``calibrate.py quantize --mode int8``. The builder receives
this object from the script (``calibrator_factory``): runtime/ never imports calibration/.

TensorRT calibrates a dynamic-shape network at one shape (the calibration profile), so only
the samples of the most common shape are used; ``shapes`` tells the builder that profile.
The calibration cache is written next to the engines and reused by later builds.
"""
from __future__ import annotations

import os

import numpy as np

from runtime.engines.cuda_mem import DeviceArray, check, cudart
from runtime.fileio import write_atomic

from .dataset import CalibrationSet, common_shape_files


def make_entropy_calibrator(calibration: str, role: str, cache_path: str):
    """An ``IInt8EntropyCalibrator2`` feeding ``role``'s recorded inputs, one sample per batch."""
    import tensorrt as trt

    calib = CalibrationSet(calibration)
    files, shapes = common_shape_files(calib, role)

    class Calibrator(trt.IInt8EntropyCalibrator2):
        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.files, self.shapes, self.cache_path = files, shapes, cache_path
            self.position = 0
            self.buffers: dict[str, DeviceArray] = {}
            self.stream = check(cudart().cudaStreamCreate())

        def get_batch_size(self):
            return 1  # explicit-batch networks: the batch lives in the shapes

        def get_batch(self, names):
            if self.position >= len(self.files):
                return None
            with np.load(self.files[self.position], allow_pickle=False) as z:
                feeds = {n: z[n] for n in names}
            self.position += 1
            for n, value in feeds.items():
                if n not in self.buffers:
                    self.buffers[n] = DeviceArray(value.shape, value.dtype)
                self.buffers[n].upload(value, self.stream)
            check(cudart().cudaStreamSynchronize(self.stream))
            return [self.buffers[n].ptr for n in names]

        def read_calibration_cache(self):
            if os.path.isfile(self.cache_path):
                return open(self.cache_path, "rb").read()
            return None

        def write_calibration_cache(self, cache):
            write_atomic(self.cache_path, bytes(cache))

    return Calibrator()
