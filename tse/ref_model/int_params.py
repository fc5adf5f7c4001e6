"""The integer parameters of both numerics profiles, derived from the extracted PyTorch
parameters (tse.ref_model.params.QuantParams) in one place: derive() -> IntParams.

Owns IntParams (reciprocals, multipliers and shifts, fixed-point biases, the gate's table and
a SiLU's;
saved and loaded as an artifact directory), Tables (IntParams flattened for the jitted stage
functions of tse.ref_model.numerics), derive() and int_params_for(). docs/numerics.md writes
every formula out.
"""
from __future__ import annotations

import json
from collections import namedtuple
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from . import artifacts
from .config import TSEConfig
from .errors import ConfigError, InputError
from .hw_numerics import gate_table, quantize_multiplier
from .hw_profile import PRODUCT_MAX, HwProfile, reciprocal, tile_counts
from .params import PRE_ACTIVATION, QuantParams
from .rounding import ROUNDING_CODES, f32_of
from .torch_numerics import gate_lut, silu_table


Tables = namedtuple("Tables", [
    # zero points: input (= pooled), hidden, excite, output
    "zx", "zh", "ze", "zo",
    # weights, int64 [hidden, C] and [C, hidden]
    "w1", "w2",
    # sigmoid table: gate code of every excite code, int64 [256]; h_lut: the hw profile's,
    # hw.gate_bits kept (gate_table; equal to lut at gate_bits = 8)
    "lut", "h_lut",
    # torch profile
    "t_recip",                      # float32 [4]: f32(1/n) per tile kind
    "t_b1i", "t_b1f", "t_b1m", "t_m1",   # int64, float32, float32, float32 [hidden]
    "t_b2i", "t_b2f", "t_b2m", "t_m2",   # [C]
    "t_mm",                         # float32: the final mul's multiplier
    "t_pair_sat",                   # bool: fc products summed in saturating int16 pairs
    # hw profile
    "h_recip", "h_recip_shift",     # int64 [4]
    "h_recip_f32",                  # float32 [4]: R / 2**shift (f32(1/n) when >= 24 bits)
    "h_b1", "h_m1", "h_s1",         # int64 [hidden]: fixed-point bias, multiplier, shift
    "h_b2", "h_m2", "h_s2",         # int64 [C]
    "h_mm", "h_ms",                 # int: the final mul's multiplier and shift
    "frac_bits",
    "sum_lo", "sum_hi", "fc1_lo", "fc1_hi", "fc2_lo", "fc2_hi",   # register ranges
    "saturate",
    "r_mean", "r_fc1", "r_fc2", "r_mul",                          # rounding codes
    # hidden activation: fc1's output zero point and lower clamp (zh, zh with the fused
    # ReLU; SiLU's input zero point, 0), whether a table follows (SiLU) and the table,
    # int64 [256] (the identity without one)
    "z1", "lo1", "hact", "hlut",
])
"""IntParams flattened for the jitted functions (IntParams.tables())."""


@dataclass(frozen=True)
class IntParams:
    """Every integer or float32 parameter the two profiles compute with.

    Built by derive(params, cfg); plain numpy arrays (arrays()) plus a small manifest
    (manifest()), saved and loaded as an artifact directory (save(), load()). Tile kinds
    index the reciprocal tables: kind = 2 * (bottom edge tile cut short) + (right edge tile
    cut short), tile_counts[kind] its element count."""

    engine: str
    hw: HwProfile
    zero_points: dict              # role -> int (input, pooled, hidden, excite, gate, output)
    tile_counts: np.ndarray        # int64 [4]
    w1: np.ndarray                 # int8 [hidden, C]
    w2: np.ndarray                 # int8 [C, hidden]
    sigmoid_lut: np.ndarray        # uint8 [256]: gate code of each excite code (the gate's
                                   # table: sigmoid or hard sigmoid)
    # torch profile
    torch_recip: np.ndarray        # float32 [4]: f32(1/n)
    torch_fc1_bias_int: np.ndarray  # int64 [hidden]: qnnpack's integer bias (0 for fbgemm)
    torch_fc1_bias_f32: np.ndarray  # float32 [hidden]: fbgemm's float bias (0 for qnnpack)
    torch_fc1_bias_mul: np.ndarray  # float32 [hidden]: what it is multiplied by (requant_torch)
    torch_fc1_mult: np.ndarray     # float32 [hidden]
    torch_fc2_bias_int: np.ndarray
    torch_fc2_bias_f32: np.ndarray
    torch_fc2_bias_mul: np.ndarray
    torch_fc2_mult: np.ndarray
    torch_mul_mult: np.ndarray     # float32 [1]
    # hw profile
    hw_recip: np.ndarray           # int64 [4]: R[n], hw.reciprocal_bits bits
    hw_recip_shift: np.ndarray     # int64 [4]
    hw_fc1_bias: np.ndarray        # int64 [hidden]: bias in accumulator units x 2**frac_bits
    hw_fc1_mult: np.ndarray        # int64 [hidden]: multiplier, hw.fc1_multiplier_bits bits
    hw_fc1_shift: np.ndarray       # int64 [hidden]: total right shift (frac_bits included)
    hw_fc2_bias: np.ndarray
    hw_fc2_mult: np.ndarray
    hw_fc2_shift: np.ndarray
    hw_mul_mult: np.ndarray        # int64 [1]
    hw_mul_shift: np.ndarray       # int64 [1]
    pair_saturation: bool = False  # QuantParams.pair_saturation (torch profile, fbgemm)
    hidden_lut: np.ndarray | None = None
    """uint8 [256]: the hidden code of each fc1 code (SiLU; fc1's output then has the
    zero point zero_points["hidden_pre"] and no ReLU). None: ReLU, fused into fc1."""
    # caches of what is computed from the fields: not init fields, so dataclasses.replace
    # gives a copy caches of its own (shared ones gave a changed copy the original's kernels)
    _tables: list = field(default_factory=list, init=False, repr=False, compare=False)
    _kernels: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __getstate__(self):
        """Pickled without the compiled kernels kernels.run keeps here (machine code and
        scratch of this process: a worker compiles its own)."""
        return {**self.__dict__, "_kernels": {}}

    @property
    def channels(self) -> int:
        return self.w1.shape[1]

    @property
    def hidden(self) -> int:
        return self.w1.shape[0]

    ARRAY_NAMES = ("tile_counts", "w1", "w2", "sigmoid_lut", "torch_recip",
                   "torch_fc1_bias_int", "torch_fc1_bias_f32", "torch_fc1_bias_mul",
                   "torch_fc1_mult", "torch_fc2_bias_int", "torch_fc2_bias_f32",
                   "torch_fc2_bias_mul", "torch_fc2_mult",
                   "torch_mul_mult", "hw_recip", "hw_recip_shift", "hw_fc1_bias",
                   "hw_fc1_mult", "hw_fc1_shift", "hw_fc2_bias", "hw_fc2_mult",
                   "hw_fc2_shift", "hw_mul_mult", "hw_mul_shift")

    OPTIONAL_ARRAYS = ("hidden_lut",)

    def arrays(self) -> dict:
        """Every table as a plain numpy array, by name (what save() writes)."""
        return {name: getattr(self, name) for name in self.ARRAY_NAMES + self.OPTIONAL_ARRAYS
                if getattr(self, name) is not None}

    def manifest(self) -> dict:
        return {"kind": "int-params", "engine": self.engine, "hw": self.hw.to_dict(),
                "zero_points": dict(self.zero_points),
                "int16_pair_saturation": self.pair_saturation}

    def save(self, out_dir) -> Path:
        return artifacts.write_artifacts(out_dir, self.arrays(), self.manifest())

    @classmethod
    def load(cls, directory) -> "IntParams":
        where = f"int params: {str(directory)!r}"
        try:
            manifest = artifacts.read_manifest(directory)
            if manifest.get("kind") != "int-params":
                raise InputError(f"{where} holds {manifest.get('kind')!r}; allowed: a "
                                 "directory written by IntParams.save")
            problems = artifacts.verify(directory)
            if problems:
                raise InputError(f"{where}: {problems[0]}")
            arrays = artifacts.load_arrays(directory,
                                           list(cls.ARRAY_NAMES + cls.OPTIONAL_ARRAYS))
            missing = [n for n in cls.ARRAY_NAMES if n not in arrays]
            if missing:
                raise InputError(f"{where} lacks {', '.join(missing)}")
            return cls(engine=manifest["engine"], hw=HwProfile.from_dict(manifest["hw"]),
                       zero_points={k: int(v) for k, v in manifest["zero_points"].items()},
                       pair_saturation=bool(manifest.get("int16_pair_saturation", False)),
                       **arrays)
        except (FileNotFoundError, KeyError, ValueError, json.JSONDecodeError) as e:
            if isinstance(e, InputError):
                raise
            raise InputError(f"{where}: {e}") from None

    def hw_gate_table(self) -> np.ndarray:
        """The hw profile's sigmoid table: sigmoid_lut with hw.gate_bits kept (gate_table),
        in 8-bit units. The ROM a gate_bits-wide datapath stores is this >> (8 - gate_bits)."""
        return gate_table(self.sigmoid_lut, self.hw.gate_bits)

    def fc1_output(self) -> tuple[int, int]:
        """(zero point, lower clamp) of fc1's requantized code: (zh, zh) with the fused ReLU,
        (SiLU's input zero point, 0) when a table follows."""
        if self.hidden_lut is None:
            return self.zero_points["hidden"], self.zero_points["hidden"]
        return self.zero_points[PRE_ACTIVATION], 0

    def equals(self, other: "IntParams") -> bool:
        return (self.engine == other.engine and self.hw == other.hw
                and self.zero_points == other.zero_points
                and self.pair_saturation == other.pair_saturation
                and self.arrays().keys() == other.arrays().keys()
                and all(np.array_equal(a, b) and a.dtype == b.dtype
                        for a, b in zip(self.arrays().values(), other.arrays().values())))

    def tables(self) -> Tables:
        """The flat tuple the jitted functions take (built once, then cached)."""
        if not self._tables:
            self._tables.append(_make_tables(self))
        return self._tables[0]


def _make_tables(ip: IntParams) -> Tables:
    hw, f = ip.hw, ip.hw.bias_frac_bits
    zp = ip.zero_points
    i64 = lambda a: np.ascontiguousarray(a, dtype=np.int64)  # noqa: E731

    def reg(bits):
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1

    sum_lo, sum_hi = reg(hw.sum_bits)
    fc1_lo, fc1_hi = reg(hw.fc1_acc_bits + f)
    fc2_lo, fc2_hi = reg(hw.fc2_acc_bits + f)
    z1, lo1 = ip.fc1_output()
    hlut = np.arange(256) if ip.hidden_lut is None else ip.hidden_lut
    return Tables(
        z1=z1, lo1=lo1, hact=ip.hidden_lut is not None, hlut=i64(hlut),
        zx=zp["input"], zh=zp["hidden"], ze=zp["excite"], zo=zp["output"],
        w1=i64(ip.w1), w2=i64(ip.w2), lut=i64(ip.sigmoid_lut),
        h_lut=i64(gate_table(ip.sigmoid_lut, hw.gate_bits)),
        t_recip=np.ascontiguousarray(ip.torch_recip, np.float32),
        t_b1i=i64(ip.torch_fc1_bias_int), t_b1f=ip.torch_fc1_bias_f32.astype(np.float32),
        t_b1m=ip.torch_fc1_bias_mul.astype(np.float32), t_m1=ip.torch_fc1_mult.astype(np.float32),
        t_b2i=i64(ip.torch_fc2_bias_int), t_b2f=ip.torch_fc2_bias_f32.astype(np.float32),
        t_b2m=ip.torch_fc2_bias_mul.astype(np.float32), t_m2=ip.torch_fc2_mult.astype(np.float32),
        t_mm=np.float32(ip.torch_mul_mult[0]),
        t_pair_sat=bool(ip.pair_saturation and ip.engine == "fbgemm"),
        h_recip=i64(ip.hw_recip), h_recip_shift=i64(ip.hw_recip_shift),
        h_recip_f32=np.ldexp(ip.hw_recip.astype(np.float64),
                             -ip.hw_recip_shift.astype(np.int64)).astype(np.float32),
        h_b1=i64(ip.hw_fc1_bias), h_m1=i64(ip.hw_fc1_mult), h_s1=i64(ip.hw_fc1_shift),
        h_b2=i64(ip.hw_fc2_bias), h_m2=i64(ip.hw_fc2_mult), h_s2=i64(ip.hw_fc2_shift),
        h_mm=int(ip.hw_mul_mult[0]), h_ms=int(ip.hw_mul_shift[0]),
        frac_bits=f, sum_lo=sum_lo, sum_hi=sum_hi, fc1_lo=fc1_lo, fc1_hi=fc1_hi,
        fc2_lo=fc2_lo, fc2_hi=fc2_hi, saturate=bool(hw.saturate),
        r_mean=ROUNDING_CODES[hw.mean_rounding], r_fc1=ROUNDING_CODES[hw.fc1_rounding],
        r_fc2=ROUNDING_CODES[hw.fc2_rounding], r_mul=ROUNDING_CODES[hw.mul_rounding])


def _fixed(v: Fraction, frac_bits: int) -> int:
    """round_half_even(v * 2**frac_bits) of an exact value."""
    return round(v * (1 << frac_bits))


def torch_requant_params(engine, per_channel, s_in, w_scale, bias, s_out):
    """The torch profile's requantization parameters of one conv (bias_i, bias_f, bias_mul,
    mult per output channel; see torch_numerics.requant_torch)."""
    n = len(w_scale)
    b_int = np.zeros(n, np.int64)
    b_f32 = np.zeros(n, np.float32)
    b_mul = np.ones(n, np.float32)
    mult = np.zeros(n, np.float32)
    for j in range(n):
        if engine == "fbgemm":
            atw = f32_of(f32_of(s_in) * f32_of(w_scale[j]))
            mult[j] = f32_of(atw / f32_of(s_out))
            if per_channel:
                b_f32[j] = f32_of(np.float32(bias[j]) / atw)
            else:
                b_f32[j] = np.float32(bias[j])
                b_mul[j] = f32_of(1.0 / np.float64(atw))
        else:  # qnnpack
            sxw = f32_of(np.float64(s_in) * np.float64(w_scale[j]))
            mult[j] = f32_of(sxw * f32_of(np.float32(1.0) / f32_of(s_out)))
            b_int[j] = int(np.rint(f32_of(np.float32(bias[j]) * f32_of(np.float32(1.0) / sxw))))
    return b_int, b_f32, b_mul, mult


def _conv_tables(engine, per_channel, s_in, w_scale, bias, s_out, hw_bits, frac_bits):
    """Requantization parameters of one 1x1 conv for both profiles (see
    torch_numerics.requant_torch)."""
    b_int, b_f32, b_mul, mult = torch_requant_params(engine, per_channel, s_in, w_scale, bias,
                                                     s_out)
    n = len(w_scale)
    h_bias = np.zeros(n, np.int64)
    h_mult = np.zeros(n, np.int64)
    h_shift = np.zeros(n, np.int64)
    for j in range(n):
        if engine == "fbgemm":
            # the bias in accumulator units, exactly as the torch profile adds it
            h_bias[j] = _fixed(Fraction(float(b_f32[j])) * Fraction(float(b_mul[j])),
                               frac_bits)
        else:  # qnnpack
            h_bias[j] = b_int[j] << frac_bits
        m, s = quantize_multiplier(float(mult[j]), hw_bits)
        h_mult[j], h_shift[j] = m, s + frac_bits
    return b_int, b_f32, b_mul, mult, h_bias, h_mult, h_shift


conv_tables = _conv_tables
"""Public name of _conv_tables (the other blocks' hw profile: tse.ref_model.attention_hw)."""


def derive(params: QuantParams, cfg: TSEConfig) -> IntParams:
    """The integer parameters of both profiles for a configuration, from the extracted
    PyTorch parameters. The one place where scales become multipliers, shifts, fixed-point
    biases, reciprocals and the sigmoid table."""
    cfg.require_unit_block("the SE integer parameters (int_params.derive)")
    if not isinstance(params, QuantParams):
        raise InputError(f"params: {type(params).__name__} is not allowed; allowed: "
                         "QuantParams (tse.quant.reference.build(...).params or loaded artifacts)")
    if (params.channels, params.hidden) != (cfg.channels, cfg.hidden):
        raise InputError(f"params: weights for C={params.channels}, hidden={params.hidden} do "
                         f"not match the configuration (C={cfg.channels}, hidden={cfg.hidden})")
    if params.engine not in ("fbgemm", "qnnpack"):
        raise InputError(f"params: engine {params.engine!r} is not allowed; allowed: "
                         "fbgemm, qnnpack")
    if params.engine != cfg.engine:
        raise InputError(f"params: extracted with engine {params.engine!r} but the "
                         f"configuration says engine = {cfg.engine!r}; allowed: the same engine")
    sc, zp = params.scales, params.zero_points
    if sc["pooled"] != sc["input"] or zp["pooled"] != zp["input"]:
        raise InputError("params: the pooled tensor must keep the input's scale and zero point "
                         f"(avg_pool2d does); got {sc['pooled']}/{zp['pooled']} vs "
                         f"{sc['input']}/{zp['input']}")
    if sc["gate"] != 1.0 / 256 or zp["gate"] != 0:
        raise InputError(f"params: the gate must be quantized with scale 1/256 and zero point "
                         f"0 (quantized sigmoid); got {sc['gate']}/{zp['gate']}")
    silu = cfg.hidden_activation == "silu"
    if silu != (PRE_ACTIVATION in sc):
        raise InputError(f"params: {'without' if silu else 'with'} SiLU's input qparams "
                         f"({PRE_ACTIVATION}_scale) for hidden_activation = "
                         f"{cfg.hidden_activation!r}; allowed: params quantized for this "
                         "dialect")
    fc1_out = PRE_ACTIVATION if silu else "hidden"
    hw, f = cfg.hw, cfg.hw.bias_frac_bits
    counts = np.array(tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols),
                      np.int64)
    recips = [reciprocal(int(n), hw.reciprocal_bits, f32=hw.mean_rounding == "f32")
              for n in counts]
    b1i, b1f, b1m, m1, hb1, hm1, hs1 = _conv_tables(
        params.engine, params.per_channel, sc["pooled"], params.w1_scale, params.b1,
        sc[fc1_out], hw.fc1_multiplier_bits, f)
    b2i, b2f, b2m, m2, hb2, hm2, hs2 = _conv_tables(
        params.engine, params.per_channel, sc["hidden"], params.w2_scale, params.b2,
        sc["excite"], hw.fc2_multiplier_bits, f)
    mm = f32_of(f32_of(f32_of(sc["input"]) * f32_of(sc["gate"]))
                * f32_of(np.float32(1.0) / f32_of(sc["output"])))
    hmm, hms = quantize_multiplier(float(mm), hw.mul_multiplier_bits)
    if not hw.saturate and cfg.profile == "hw":   # the torch profile never uses these widths
        for name, bias, fan_in in (("fc1_acc_bits", hb1, cfg.channels),
                                   ("fc2_acc_bits", hb2, cfg.hidden)):
            worst = (PRODUCT_MAX * fan_in << f) + int(np.abs(bias).max())
            bits = getattr(hw, name)
            if worst > (1 << (bits + f - 1)) - 1:
                need = (worst.bit_length() + 1) - f
                raise ConfigError(
                    f"hw.{name}: {bits} can overflow with this block's biases (|acc| up to "
                    f"{worst / 2 ** f:.6g} in accumulator units); allowed: >= {need}, "
                    "or hw.saturate = true to saturate and count")
    return IntParams(
        engine=params.engine, hw=hw, zero_points=dict(zp), tile_counts=counts,
        pair_saturation=params.pair_saturation,
        w1=params.w1.copy(), w2=params.w2.copy(),
        sigmoid_lut=gate_lut(cfg.gate, sc["excite"], zp["excite"], cfg.gate_slope,
                             cfg.gate_offset, params.engine),
        hidden_lut=(silu_table(sc[PRE_ACTIVATION], zp[PRE_ACTIVATION], sc["hidden"],
                               zp["hidden"]) if silu else None),
        torch_recip=np.array([f32_of(1.0 / int(n)) for n in counts], np.float32),
        torch_fc1_bias_int=b1i, torch_fc1_bias_f32=b1f, torch_fc1_bias_mul=b1m,
        torch_fc1_mult=m1, torch_fc2_bias_int=b2i, torch_fc2_bias_f32=b2f,
        torch_fc2_bias_mul=b2m, torch_fc2_mult=m2,
        torch_mul_mult=np.array([mm], np.float32),
        hw_recip=np.array([r for r, _ in recips], np.int64),
        hw_recip_shift=np.array([s for _, s in recips], np.int64),
        hw_fc1_bias=hb1, hw_fc1_mult=hm1, hw_fc1_shift=hs1,
        hw_fc2_bias=hb2, hw_fc2_mult=hm2, hw_fc2_shift=hs2,
        hw_mul_mult=np.array([hmm], np.int64), hw_mul_shift=np.array([hms], np.int64))


def int_params_for(cfg: TSEConfig, params) -> IntParams:
    """IntParams from QuantParams (derived) or IntParams (checked against cfg)."""
    cfg.require_unit_block("the SE integer models (kernels, streaming model, vectors)")
    if isinstance(params, IntParams):
        counts = tile_counts(cfg.height, cfg.width, cfg.tile_rows, cfg.tile_cols)
        if (params.channels, params.hidden) != (cfg.channels, cfg.hidden):
            raise InputError(f"int params: C={params.channels}, hidden={params.hidden} do not "
                             f"match the configuration (C={cfg.channels}, "
                             f"hidden={cfg.hidden})")
        if tuple(int(n) for n in params.tile_counts) != tuple(counts):
            raise InputError(f"int params: derived for tile element counts "
                             f"{list(map(int, params.tile_counts))}, the configuration has "
                             f"{list(counts)}; derive them for this configuration")
        if params.hw != cfg.hw:
            raise InputError("int params: derived for other hw widths than the "
                             "configuration's [hw]; derive them for this configuration")
        if (params.hidden_lut is not None) != (cfg.hidden_activation == "silu"):
            raise InputError(f"int params: derived for another hidden activation than "
                             f"{cfg.hidden_activation!r}; derive them for this configuration")
        return params
    return derive(params, cfg)
