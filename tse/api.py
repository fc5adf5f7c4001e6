"""The Python API: golden vectors of an SE block held in memory (docs/api.md).

Two calls, the same chain as `tse vectors` (the same library functions, so the same bytes):

    ref = tse.reference(block, x, calibration=calib, tile="7xW", lanes=8)
    vec = tse.vectors(ref, out="vectors/")          # out=None: arrays only

block is a torch SE module (the project's tse.quant.float_block.TSE, or any module whose two
excite layers are conv1/conv2, fc1/fc2 or conv_reduce/conv_expand, 1x1 convolutions or
Linear) or its state_dict; x and calibration are float activations [N, C, H, W] or
[C, H, W] (numpy arrays or tensors). C and hidden come from the weights, H and W from x;
everything else is a TSEConfig field given as a keyword (tile, lanes, excite_multipliers,
engine, profile, seed, buffer_depth, hw) or a whole `config` whose shape fields are replaced.
A bad value raises ConfigError or InputError (ValueError subclasses, tse.ref_model.errors) with
one line naming the value and what is allowed.
"""
from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

from tse.ref_model.config import DEFAULT, TSEConfig
from tse.ref_model.errors import ConfigError, InputError

from .golden import Vectors

INFERRED = ("channels", "height", "width", "reduction", "hidden")
"""Configuration fields the API takes from the block's weights and the input's shape."""

__all__ = ["reference", "vectors", "config_for", "Vectors", "ConfigError", "InputError"]


def state_dict_of(block) -> dict:
    """The SE state_dict of block (a torch module or a mapping of tensors)."""
    import torch

    if isinstance(block, torch.nn.Module):
        return block.state_dict()
    if isinstance(block, Mapping) and block and all(
            isinstance(v, torch.Tensor) for v in block.values()):
        return dict(block)
    raise InputError(f"block: {type(block).__name__} is not allowed; allowed: an SE "
                     "torch.nn.Module (conv1/conv2, fc1/fc2 or conv_reduce/conv_expand as 1x1 "
                     "convolutions or Linear) or its state_dict (a non-empty dict of tensors)")


def reduction_for(channels: int, hidden: int) -> int:
    """The smallest reduction r with channels // r == hidden, or 0 (none: the configuration
    then keeps the hidden width alone, as RegNetY's C=768, hidden 80)."""
    if not 1 <= hidden <= channels:
        raise InputError(f"block: hidden={hidden} is not allowed with channels={channels}; "
                         f"allowed hidden widths: 1..{channels}")
    r = channels // (hidden + 1) + 1
    return r if channels // r == hidden else 0


def frame_shape(x, what: str) -> tuple[int, int]:
    """(H, W) of activations [N, C, H, W] or [C, H, W]."""
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) not in (3, 4):
        raise InputError(f"{what}: an array of shape {list(shape)} is not allowed; allowed: "
                         "float activations [N, C, H, W] or [C, H, W] (NCHW)")
    return int(shape[-2]), int(shape[-1])


def config_for(block, x, *, config: TSEConfig | None = None, **options) -> TSEConfig:
    """The configuration of block on input x: C and hidden from the weights, H and W from x,
    the rest from options (TSEConfig fields) over config (default: the built-in default,
    its tile and, when `lanes` is not given, the largest lane count <= 8 dividing C)."""
    from tse.quant.float_block import TSE
    from tse.quant.se_weights import excite_shape

    for name in INFERRED:
        if name in options:
            raise ConfigError(f"{name}: given as {options[name]!r}, but the API infers it "
                              "(channels and hidden from the block's weights, height and width "
                              "from the input); allowed: leave it out")
    channels, hidden = excite_shape(state_dict_of(block))
    height, width = frame_shape(x, "input")
    base = (config or DEFAULT).to_dict()
    if config is None and "lanes" not in options:
        base["lanes"] = math.gcd(channels, DEFAULT.lanes)
    if isinstance(block, TSE):
        if "tile" not in options:
            base["tile"] = "{}x{}".format(*block.kernel)
        dialect = {k: v for k, v in block.dialect().items() if k != "hidden"}
        base.update({k: v for k, v in dialect.items() if k not in options})
    data = {**base, **options, "channels": channels, "height": height, "width": width,
            "reduction": reduction_for(channels, hidden), "hidden": hidden}
    return TSEConfig.from_dict(data, source="tse.api")


def reference(block, x, calibration=None, *, config: TSEConfig | None = None,
              allow_bad_calibration: bool = False, **options):
    """The quantized PyTorch reference of block on frames x (tse.quant.reference.Reference: cfg,
    params, input_float, codes by stage NCHW, float_output, sources), calibrated on
    calibration (default: x itself). options are TSEConfig fields (see config_for). A
    calibration that clips more than 5 % of x or spans fewer than 4 codes is refused unless
    allow_bad_calibration (as in the CLI); above 1 % clipped, a warning."""
    from tse.quant import calibration_check
    from tse.quant import reference as quant_reference

    from . import preflight

    cfg = config_for(block, x, config=config, **options)
    calib = x if calibration is None else calibration
    frame_shape(calib, "calibration")
    name = type(block).__name__
    sources = {"weights": f"in memory ({name})",
               "calibration": ("the input" if calibration is None
                               else f"in memory, {list(calib.shape)}"),
               "input": f"in memory, {list(x.shape)}"}
    prepared = quant_reference.prepare_arrays(cfg, state_dict_of(block), calib, x, sources)
    fit = preflight.calibration_fit(prepared.x, prepared.params)
    for w in calibration_check.check(fit, allow_bad_calibration):
        warnings.warn(f"calibration: {w}", stacklevel=2)
    return quant_reference.run(prepared)


def vectors(ref, out=None, *, profile: str | None = None, **bundle_options) -> Vectors:
    """Golden vectors of a reference with the profile's integer model (default: the
    reference's cfg.profile), compared with its quantized PyTorch codes; with out, also the
    vectors directory that `tse vectors` writes (docs/formats.md), replaced whole, with the
    unit's Verilog and self-checking testbench (bundle_options go to tse.sim.selfcheck.bundle)."""
    from tse.quant import reference as quant_reference
    from tse.ref_model import kernels
    from tse.ref_model import vectors as vectors_model

    from . import golden

    if not isinstance(ref, quant_reference.Reference):
        raise InputError(f"reference: {type(ref).__name__} is not allowed; allowed: what "
                         "tse.reference(...) returns")
    cfg = ref.cfg
    if profile is not None and profile != cfg.profile:
        cfg = TSEConfig.from_dict({**cfg.to_dict(), "profile": profile}, source="tse.api")
    torch_codes = {s: kernels.nhwc(ref.codes[s]) for s in vectors_model.COMPARED}
    v = golden.build(cfg, ref.params, kernels.nhwc(ref.codes["input"]), torch_codes,
                     cfg.profile, ref.sources)
    return v if out is None else golden.write(v, out, **bundle_options)
