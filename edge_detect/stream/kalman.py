"""A constant-velocity Kalman filter on box centre and size, vectorized over many tracks.

State ``x`` (8,): ``[cx, cy, w, h, vcx, vcy, vw, vh]`` in image pixels and pixels per frame; measurement ``z``
(4,): ``[cx, cy, w, h]`` of a detected box. One step of :meth:`KalmanBoxFilter.predict` is one frame.

Noise scales with the box (a near, large object moves and jitters more pixels than a far one): the standard
deviation of the position process / measurement noise is ``std_pos * w`` on x and ``std_pos * h`` on y (the
same for the size), of the velocity process noise ``std_vel * w`` / ``std_vel * h`` per frame. The defaults
(1/20 and 1/160) are the values ByteTrack uses; using ``w`` for the x terms instead of ``h`` everywhere keeps a
tall pedestrian's horizontal uncertainty proportional to its width.
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["KalmanBoxFilter"]

_H = np.hstack([np.eye(4), np.zeros((4, 4))])  # measurement matrix (4, 8)


class KalmanBoxFilter:
    """Constant-velocity Kalman filter over ``[cx, cy, w, h]`` (see module doc); stateless, arrays in and out.

    Args:
        std_pos: position/size noise as a fraction of the box size.
        std_vel: velocity process noise per frame as a fraction of the box size.
    """

    def __init__(self, std_pos: float = 1.0 / 20, std_vel: float = 1.0 / 160) -> None:
        self.std_pos, self.std_vel = float(std_pos), float(std_vel)
        self._F = np.eye(8)
        self._F[:4, 4:] = np.eye(4)

    def _sizes(self, wh: np.ndarray) -> np.ndarray:
        """``(N, 4)`` scale per state component ``[w, h, w, h]`` (at least 1 px)."""
        wh = np.maximum(np.asarray(wh, np.float64).reshape(-1, 2), 1.0)
        return np.concatenate([wh, wh], axis=1)

    def initiate(self, z: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """New tracks from measurements ``(N, 4)`` -> mean ``(N, 8)`` (zero velocity), covariance ``(N, 8, 8)``."""
        z = np.asarray(z, np.float64).reshape(-1, 4)
        mean = np.concatenate([z, np.zeros_like(z)], axis=1)
        s = self._sizes(z[:, 2:])
        std = np.concatenate([2 * self.std_pos * s, 10 * self.std_vel * s], axis=1)
        cov = np.zeros((len(z), 8, 8))
        idx = np.arange(8)
        cov[:, idx, idx] = std ** 2
        return mean, cov

    def predict(self, mean: np.ndarray, cov: np.ndarray, steps: int = 1) -> Tuple[np.ndarray, np.ndarray]:
        """Advance ``(N, 8)`` means and ``(N, 8, 8)`` covariances by ``steps`` frames (new arrays)."""
        mean, cov = np.array(mean, np.float64), np.array(cov, np.float64)
        idx = np.arange(8)
        for _ in range(max(int(steps), 0)):
            s = self._sizes(mean[:, 2:4])
            q = np.zeros_like(cov)
            q[:, idx, idx] = np.concatenate([self.std_pos * s, self.std_vel * s], axis=1) ** 2
            mean = mean @ self._F.T
            cov = self._F @ cov @ self._F.T + q
            mean[:, 2:4] = np.maximum(mean[:, 2:4], 1.0)
        return mean, cov

    def project(self, mean: np.ndarray, cov: np.ndarray, scale: float = 1.0,
                isotropic: bool = False) -> Tuple[np.ndarray, np.ndarray]:
        """Predicted measurement ``(N, 4)`` and its covariance ``(N, 4, 4)`` (``scale`` multiplies the
        measurement noise standard deviation; ``isotropic`` scales it by the box's larger side on both axes)."""
        mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        s = self._sizes(mean[:, 2:4])
        if isotropic:
            s = np.repeat(s.max(axis=1, keepdims=True), 4, axis=1)
        r = np.zeros((len(mean), 4, 4))
        idx = np.arange(4)
        r[:, idx, idx] = (scale * self.std_pos * s) ** 2
        return mean[:, :4].copy(), _H @ cov @ _H.T + r

    def update(self, mean: np.ndarray, cov: np.ndarray, z: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Correct ``(N, 8)`` / ``(N, 8, 8)`` with measurements ``(N, 4)`` (row i updates track i)."""
        mean, cov = np.asarray(mean, np.float64), np.asarray(cov, np.float64)
        z_pred, s = self.project(mean, cov)
        gain = np.linalg.solve(s, (cov @ _H.T).transpose(0, 2, 1)).transpose(0, 2, 1)  # P H^T S^-1, (N, 8, 4)
        innovation = np.asarray(z, np.float64).reshape(-1, 4) - z_pred
        new_mean = mean + np.einsum("nij,nj->ni", gain, innovation)
        new_cov = cov - gain @ s @ gain.transpose(0, 2, 1)
        return new_mean, new_cov

    def position_distance(self, mean: np.ndarray, cov: np.ndarray, z: np.ndarray, scale: float = 1.0,
                          isotropic: bool = False) -> np.ndarray:
        """Squared Mahalanobis distance of measured centres ``z[:, :2]`` (``(M, 4)``) to each track's predicted
        centre: float64 ``(N, M)``; compare with the chi-square 2-dof quantile (5.99 at 95 %). ``scale`` and
        ``isotropic`` as in :meth:`project`."""
        z = np.asarray(z, np.float64).reshape(-1, 4)
        z_pred, s = self.project(mean, cov, scale, isotropic)
        out = np.zeros((len(z_pred), len(z)))
        for i in range(len(z_pred)):
            d = z[:, :2] - z_pred[i, :2]
            out[i] = np.einsum("mi,ij,mj->m", d, np.linalg.inv(s[i, :2, :2]), d)
        return out
