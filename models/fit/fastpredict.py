"""Booster predictions for small matrices through LightGBM's C API, without ``Booster.predict``'s overhead.

``lightgbm.Booster.predict`` costs about 90 us per call before any tree is walked (an ``_InnerPredictor``
per call, a deep copy of the keyword arguments, an extra C call to size the output, dtype and layout
conversions); a one-lead endpoint request makes four such calls (readiness, stage, contributions,
counterfactual actions). :class:`SmallBatchPredictor` makes the same ``LGBM_BoosterPredictForMat`` call
directly on a float64 C-contiguous matrix with the per-row output size computed once: about 25 us a call;
a single row goes through ``LGBM_BoosterPredictForMatSingleRowFast`` with its configuration prepared once
per prediction kind (about 5 us; ``benchmarks/bench_endpoint.py`` reports the end-to-end effect). The C
library does the same work and returns the same numbers; ``tests/models/test_fastpredict.py`` checks them
bit for bit against ``Booster.predict``. Both C calls are thread-safe (LightGBM locks the booster's cached single-row
predictor; matrix predictions take a shared lock).

Like ``Booster.predict`` it uses ``best_iteration`` when the booster has one (else all iterations).
"""

from __future__ import annotations

import ctypes
import threading
from typing import Literal

import lightgbm as lgb
import numpy as np
from lightgbm.basic import _LIB, _safe_call

PredictKind = Literal["normal", "raw", "contrib"]
_TYPE_CODES: dict[str, int] = {"normal": 0, "raw": 1, "contrib": 3}  # C_API_PREDICT_* of LightGBM's c_api.h
_FLOAT64 = 1  # C_API_DTYPE_FLOAT64
_ROW_MAJOR = 1
_DOUBLE_P = ctypes.POINTER(ctypes.c_double)


class SmallBatchPredictor:
    """``booster.predict(X, ...)`` for float64 matrices, one thread, straight through the C API.

    Args:
        booster: a trained or loaded booster; it must outlive this predictor (it holds the C handle).
        num_threads: LightGBM threads per call (1 suits small matrices: waking an OpenMP team costs more
            than it saves).
        max_rows: matrices with more rows go to ``Booster.predict`` with LightGBM's default thread count
            (batches); None sends every matrix through the C API.
    """

    def __init__(self, booster: lgb.Booster, *, num_threads: int = 1, max_rows: int | None = None) -> None:
        if num_threads < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self.booster = booster
        self.max_rows = max_rows
        self.n_features = booster.num_feature()
        best = booster.best_iteration
        self._num_iteration = best if best is not None and best > 0 else -1
        self._parameter = ctypes.c_char_p(f"num_threads={num_threads}".encode())
        self._per_row = {kind: self._outputs_per_row(code) for kind, code in _TYPE_CODES.items()}
        self._fast: dict[str, ctypes.c_void_p] = {}
        self._fast_lock = threading.Lock()

    def __del__(self) -> None:
        try:
            for handle in self._fast.values():
                _LIB.LGBM_FastConfigFree(handle)
        except Exception:  # interpreter shutdown: the library may already be gone
            pass

    def _fast_config(self, kind: str) -> ctypes.c_void_p:
        handle = self._fast.get(kind)
        if handle is None:
            with self._fast_lock:
                handle = self._fast.get(kind)
                if handle is None:
                    handle = ctypes.c_void_p()
                    _safe_call(
                        _LIB.LGBM_BoosterPredictForMatSingleRowFastInit(
                            self.booster._handle,
                            ctypes.c_int(_TYPE_CODES[kind]),
                            ctypes.c_int(0),
                            ctypes.c_int(self._num_iteration),
                            ctypes.c_int(_FLOAT64),
                            ctypes.c_int32(self.n_features),
                            self._parameter,
                            ctypes.byref(handle),
                        )
                    )
                    self._fast[kind] = handle
        return handle

    def _outputs_per_row(self, predict_type: int) -> int:
        out = ctypes.c_int64(0)
        _safe_call(
            _LIB.LGBM_BoosterCalcNumPredict(
                self.booster._handle,
                ctypes.c_int(1),
                ctypes.c_int(predict_type),
                ctypes.c_int(0),
                ctypes.c_int(self._num_iteration),
                ctypes.byref(out),
            )
        )
        return int(out.value)

    def predict(self, X: np.ndarray, kind: PredictKind = "normal") -> np.ndarray:
        """Predictions for the rows of ``X``, shaped as ``Booster.predict`` shapes them.

        ``normal``: probabilities (``(n,)`` binary, ``(n, n_class)`` multiclass); ``raw``: raw scores in the
        same shapes; ``contrib``: TreeSHAP contributions ``(n, n_features + 1)`` per class, classes side by
        side for multiclass (as ``pred_contrib=True``).

        Raises:
            ValueError: ``X`` is not 2-D with the booster's number of features.
        """
        code = _TYPE_CODES[kind]
        mat = np.ascontiguousarray(X, dtype=np.float64)
        if mat.ndim != 2 or mat.shape[1] != self.n_features:
            raise ValueError(f"expected a 2-D matrix with {self.n_features} feature columns, got shape {mat.shape}")
        n = mat.shape[0]
        if self.max_rows is not None and n > self.max_rows:
            return np.asarray(
                self.booster.predict(mat, raw_score=kind == "raw", pred_contrib=kind == "contrib"), dtype=np.float64
            )
        per_row = self._per_row[kind]
        out = np.empty(n * per_row, dtype=np.float64)
        written = ctypes.c_int64(0)
        if n == 1:
            _safe_call(
                _LIB.LGBM_BoosterPredictForMatSingleRowFast(
                    self._fast_config(kind),
                    mat.ctypes.data_as(ctypes.c_void_p),
                    ctypes.byref(written),
                    out.ctypes.data_as(_DOUBLE_P),
                )
            )
        elif n:
            _safe_call(
                _LIB.LGBM_BoosterPredictForMat(
                    self.booster._handle,
                    mat.ctypes.data_as(ctypes.c_void_p),
                    ctypes.c_int(_FLOAT64),
                    ctypes.c_int32(n),
                    ctypes.c_int32(self.n_features),
                    ctypes.c_int(_ROW_MAJOR),
                    ctypes.c_int(code),
                    ctypes.c_int(0),
                    ctypes.c_int(self._num_iteration),
                    self._parameter,
                    ctypes.byref(written),
                    out.ctypes.data_as(_DOUBLE_P),
                )
            )
        if n and written.value != out.size:
            raise RuntimeError(f"LightGBM wrote {written.value} predictions, expected {out.size}")
        return out if per_row == 1 else out.reshape(n, per_row)
