"""The quantized block's parameters in plain numpy form: what the integer model computes from.

quant/ extracts these from a converted PyTorch block; everything downstream (the integer
model, golden vectors, RTL ROMs) reads them from here and never needs torch. They load from
and save to an artifact directory (manifest.json plus .npy files, see tse.ref_model.artifacts).

Weights are int8 codes, symmetric (zero point 0), one scale per output channel or one for
the tensor; biases are float32 as PyTorch keeps them; every activation tensor is quint8
with a scale and a zero point. Scales keep the float64 value PyTorch reports: each numerics
profile rounds them (to float32 for the torch profile) where the hardware would.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ACTIVATIONS = ("input", "pooled", "hidden", "excite", "gate", "output")
"""Quantized activation tensors of the block, in dataflow order."""
PRE_ACTIVATION = "hidden_pre"
"""fc1's output before a hidden activation that is a table of its own (SiLU): a role in
scales and zero_points only then (ReLU is fused into fc1, so hidden is fc1's output)."""


@dataclass
class QuantParams:
    engine: str
    scales: dict          # role in ACTIVATIONS -> float
    zero_points: dict     # role in ACTIVATIONS -> int in [0, 255]
    w1: np.ndarray        # int8 [hidden, C]
    w1_scale: np.ndarray  # float64 [hidden] (equal entries when per-tensor)
    b1: np.ndarray        # float32 [hidden]
    w2: np.ndarray        # int8 [C, hidden]
    w2_scale: np.ndarray  # float64 [C]
    b2: np.ndarray        # float32 [C]
    per_channel: bool
    pair_saturation: bool = False
    """The engine's u8 x s8 kernel adds the products of input channels 2k and 2k+1 (raw
    codes, zero point applied afterwards) in int16 with saturation before widening: fbgemm
    on CPUs without AVX512-VNNI (vpmaddubsw). Codes above 127 can then change an fc's
    accumulator; a reduce_range calibration keeps them below. tse.quant.engine_probe measures
    it on the machine that runs PyTorch; the torch profile reproduces it when set."""

    def __post_init__(self):
        hidden, channels = self.w1.shape
        expect = {"w1": (self.w1, np.int8, (hidden, channels)),
                  "w2": (self.w2, np.int8, (channels, hidden)),
                  "w1_scale": (self.w1_scale, np.float64, (hidden,)),
                  "w2_scale": (self.w2_scale, np.float64, (channels,)),
                  "b1": (self.b1, np.float32, (hidden,)),
                  "b2": (self.b2, np.float32, (channels,))}
        for name, (arr, dtype, shape) in expect.items():
            if not isinstance(arr, np.ndarray) or arr.dtype != dtype or arr.shape != shape:
                got = (f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray)
                       else type(arr).__name__)
                raise ValueError(f"{name}: {got} is not allowed; allowed: {np.dtype(dtype)} "
                                 f"{shape}")
        for role in self.roles():
            zp = self.zero_points.get(role)
            if not isinstance(zp, int) or not 0 <= zp <= 255:
                raise ValueError(f"{role}_zero_point: {zp!r} is not allowed; allowed: 0..255")
            s = self.scales.get(role)
            if not isinstance(s, float) or not s > 0:
                raise ValueError(f"{role}_scale: {s!r} is not allowed; allowed: a positive float")

    def roles(self) -> tuple:
        """ACTIVATIONS, with PRE_ACTIVATION after input..pooled when the block has one."""
        if PRE_ACTIVATION in self.scales or PRE_ACTIVATION in self.zero_points:
            return ACTIVATIONS[:2] + (PRE_ACTIVATION,) + ACTIVATIONS[2:]
        return ACTIVATIONS

    @property
    def channels(self) -> int:
        return self.w1.shape[1]

    @property
    def hidden(self) -> int:
        return self.w1.shape[0]

    # ---- the artifact form: arrays by role plus the manifest's "quant" section ------------
    def arrays(self) -> dict:
        return {"w1": self.w1, "b1": self.b1, "w2": self.w2, "b2": self.b2}

    def quant_section(self) -> dict:
        section = {}
        for role in self.roles():
            section[f"{role}_scale"] = self.scales[role]
            section[f"{role}_zero_point"] = self.zero_points[role]
        for name in ("w1_scale", "w2_scale"):
            s = getattr(self, name)
            section[name] = [float(v) for v in s] if self.per_channel else float(s[0])
        section["per_channel_weights"] = self.per_channel
        section["int16_pair_saturation"] = self.pair_saturation
        return section

    @classmethod
    def from_artifacts(cls, engine: str, quant: dict, arrays: dict) -> "QuantParams":
        """Rebuild from a manifest's engine and "quant" section and the loaded arrays."""
        w1, w2 = arrays["w1"], arrays["w2"]
        roles = ACTIVATIONS + ((PRE_ACTIVATION,) if f"{PRE_ACTIVATION}_scale" in quant else ())

        def weight_scale(name, n):
            v = quant[name]
            return np.asarray(v, np.float64) if isinstance(v, list) else np.full(n, v, np.float64)

        return cls(engine=engine,
                   scales={r: float(quant[f"{r}_scale"]) for r in roles},
                   zero_points={r: int(quant[f"{r}_zero_point"]) for r in roles},
                   w1=w1, w1_scale=weight_scale("w1_scale", w1.shape[0]), b1=arrays["b1"],
                   w2=w2, w2_scale=weight_scale("w2_scale", w2.shape[0]), b2=arrays["b2"],
                   per_channel=bool(quant["per_channel_weights"]),
                   pair_saturation=bool(quant.get("int16_pair_saturation", False)))

    def equals(self, other: "QuantParams") -> bool:
        """Bit-for-bit equality (codes, float bit patterns, qparams, engine)."""
        return (self.engine == other.engine and self.per_channel == other.per_channel
                and self.pair_saturation == other.pair_saturation
                and self.scales == other.scales and self.zero_points == other.zero_points
                and all(np.array_equal(a, b) and a.dtype == b.dtype
                        for a, b in zip(self._all_arrays(), other._all_arrays())))

    def _all_arrays(self):
        return (self.w1, self.w1_scale, self.b1, self.w2, self.w2_scale, self.b2)
