"""Bring a trained SE layer: map a PyTorch state_dict of an SE module onto the TSE block.

Common SE implementations name the two excite layers conv1/conv2 (1x1 convolutions),
fc1/fc2 (torchvision's SqueezeExcitation, as convolutions; many others, as Linear) or
conv_reduce/conv_expand (timm). Keys may carry a prefix ("se.fc1.weight"); Linear weights
[out, in] become 1x1 convolution weights [out, in, 1, 1]. Shapes must match the configuration.
"""
from __future__ import annotations

from pathlib import Path

import torch

from tse.ref_model.errors import InputError

NAMINGS = (("conv1", "conv2"), ("fc1", "fc2"), ("conv_reduce", "conv_expand"))


def load_state_dict_file(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise InputError(f"weights: file {str(path)!r} does not exist")
    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds for a bad file
        raise InputError(f"weights: {str(path)!r} is not a PyTorch state_dict file ({e})") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise InputError(f"weights: {str(path)!r} does not hold a state_dict (a dict of tensors)")
    return sd


def load_se_state_dict(block, sd: dict) -> None:
    """Copy an SE module's excite weights into block.conv1/conv2 (in place)."""
    first, second = _find_layers(sd)
    c, hidden = block.conv1.in_channels, block.conv1.out_channels
    with torch.no_grad():
        for (prefix, conv, shape) in ((first, block.conv1, (hidden, c)),
                                      (second, block.conv2, (c, hidden))):
            w, b = sd[prefix + "weight"], sd.get(prefix + "bias")
            if tuple(w.shape) not in (shape, shape + (1, 1)):
                raise InputError(f"weights: {prefix}weight has shape {list(w.shape)}; allowed: "
                                 f"{list(shape)} or {list(shape + (1, 1))} for channels={c}, "
                                 f"hidden={hidden}")
            if b is None or tuple(b.shape) != (shape[0],):
                got = "no bias" if b is None else f"shape {list(b.shape)}"
                raise InputError(f"weights: {prefix}bias has {got}; allowed: shape [{shape[0]}]")
            for name, t in ((prefix + "weight", w), (prefix + "bias", b)):
                if not t.is_floating_point():
                    raise InputError(f"weights: {name} has dtype {t.dtype}; allowed: a "
                                     "floating-point tensor")
                bad = int((~torch.isfinite(t)).sum())
                if bad:
                    raise InputError(f"weights: {name} holds {bad} NaN or infinite "
                                     "value(s); allowed: finite values only")
            conv.weight.copy_(w.reshape(shape + (1, 1)).float())
            conv.bias.copy_(b.float())


def excite_shape(sd: dict) -> tuple[int, int]:
    """(channels, hidden) of an SE module's state_dict, read from its first excite layer's
    weight ([hidden, C] or [hidden, C, 1, 1]); the second layer must be [C, hidden]."""
    first, second = _find_layers(sd)
    w1, w2 = sd[first + "weight"], sd[second + "weight"]
    if w1.dim() not in (2, 4) or tuple(w1.shape[2:]) not in ((), (1, 1)):
        raise InputError(f"weights: {first}weight has shape {list(w1.shape)}; allowed: "
                         "[hidden, C] (Linear) or [hidden, C, 1, 1] (1x1 convolution)")
    hidden, channels = int(w1.shape[0]), int(w1.shape[1])
    if tuple(w2.shape) not in ((channels, hidden), (channels, hidden, 1, 1)):
        raise InputError(f"weights: {second}weight has shape {list(w2.shape)}; allowed: "
                         f"[{channels}, {hidden}] or [{channels}, {hidden}, 1, 1] (the "
                         f"transpose of {first}weight's {list(w1.shape[:2])})")
    return channels, hidden


def _find_layers(sd: dict) -> tuple[str, str]:
    for a, b in NAMINGS:
        firsts = [k[: -len("weight")] for k in sd if k.endswith(f"{a}.weight")
                  and (k == f"{a}.weight" or k.endswith(f".{a}.weight"))]
        if len(firsts) > 1:
            raise InputError(f"weights: several SE layers named {a} ({', '.join(firsts)}); "
                             "allowed: the state_dict of one SE module")
        if firsts:
            second = firsts[0][: -len(a) - 1] + b + "."
            if second + "weight" not in sd:
                raise InputError(f"weights: found {firsts[0]}weight but no {second}weight")
            return firsts[0], second
    names = ", ".join(f"{a}/{b}" for a, b in NAMINGS)
    keys = ", ".join(list(sd)[:6])
    raise InputError(f"weights: no SE excite layers found (keys: {keys}); allowed namings: {names}")
