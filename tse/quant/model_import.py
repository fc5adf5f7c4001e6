"""Every SE block of a whole PyTorch model, described for the unit and calibrated on real data.

For each block: its qualified name, C, H, W, hidden, the hidden activation, the gate (kind,
slope, offset), the excite's weights and biases, and the float activations that really reach
it when the model runs on the user's images (forward hooks), for calibration and test frames.

Candidates are modules whose only weight layers are two convolutions or linears C -> hidden
-> C that see a smaller map than the module's input (tse.quant.se_hooks's rule, any kernel).
The dialect is read from what the block computes on the first batch, not from module names,
so functional activations (F.relu, x.sigmoid()) and any spelling are found alike:
  hidden activation  relu or silu when the second layer's input equals that function of the
                     first layer's output; anything else is named by its module class
  gate               sigmoid, or hardsigmoid with slope and offset fitted (nn.Hardsigmoid:
                     1/6, 0.5), from output / input per channel
A block the unit cannot represent keeps its description and gets a one-line reason naming it
(another activation, a non-1x1 excite, a squeeze that is no mean, a module called more than
once per forward pass, an output that is not input x gate); the other blocks still go on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from tse.ref_model.errors import ConfigError, InputError

from .se_hooks import excite_io, weight_layers

HARDSIGMOID = (1 / 6, 0.5)
"""PyTorch's nn.Hardsigmoid: clamp(x / 6 + 1 / 2, 0, 1)."""
FIT_TOL = 1e-4


@dataclass
class SEBlock:
    """One SE block of a model (PyTorch or ONNX), in the unit's terms."""

    name: str
    channels: int
    height: int
    width: int
    hidden: int
    hidden_activation: str
    gate: str
    gate_slope: float | None
    gate_offset: float | None
    w1: np.ndarray = field(repr=False)      # [hidden, C]
    b1: np.ndarray = field(repr=False)      # [hidden]
    w2: np.ndarray = field(repr=False)      # [C, hidden]
    b2: np.ndarray = field(repr=False)      # [C]
    reason: str | None = None               # why the unit cannot compute it; None: it can
    where: str = ""                         # module class or ONNX tensor it was found at
    output: str = ""                        # ONNX: the tensor the block's Mul writes

    def describe(self) -> dict:
        """Everything but the weights, JSON-ready."""
        return {"name": self.name, "channels": self.channels, "height": self.height,
                "width": self.width, "hidden": self.hidden,
                "hidden_activation": self.hidden_activation, "gate": self.gate,
                "gate_slope": self.gate_slope, "gate_offset": self.gate_offset,
                "where": self.where, "reason": self.reason}

    def state_dict(self) -> dict:
        """The excite as the SE state_dict tse.api takes (conv1/conv2, 1x1)."""
        t = torch.from_numpy
        return {"conv1.weight": t(self.w1.reshape(self.hidden, self.channels, 1, 1).copy()),
                "conv1.bias": t(self.b1.copy()),
                "conv2.weight": t(self.w2.reshape(self.channels, self.hidden, 1, 1).copy()),
                "conv2.bias": t(self.b2.copy())}

    def dialect(self) -> dict:
        """The TSEConfig fields of its dialect."""
        d = {"hidden_activation": self.hidden_activation, "gate": self.gate}
        if self.gate == "hardsigmoid":
            d.update(gate_slope=self.gate_slope, gate_offset=self.gate_offset)
        return d


def identify_activation(z: torch.Tensor, a: torch.Tensor, seen: list[str]) -> str:
    """relu or silu when a == f(z), else a name for what is there (a module class seen
    between the layers, or "an unrecognized function")."""
    for name, f in (("relu", torch.relu), ("silu", nn.functional.silu)):
        if z.shape == a.shape and torch.allclose(f(z), a, atol=FIT_TOL, rtol=FIT_TOL):
            return name
    if z.shape == a.shape and torch.equal(z, a):
        return "identity"
    return seen[0] if seen else "an unrecognized function"


def identify_gate(z: torch.Tensor, g: torch.Tensor, seen: list[str]):
    """(gate, slope, offset) fitting g = gate(z): sigmoid, or a hard sigmoid whose slope and
    offset are fitted on the points strictly inside (0, 1); else (name, None, None)."""
    z, g = z.double().flatten(), g.double().flatten()
    if torch.allclose(torch.sigmoid(z), g, atol=FIT_TOL, rtol=0):
        return "sigmoid", None, None
    inside = (g > 1e-6) & (g < 1 - 1e-6)
    if int(inside.sum()) >= 2 and float(z[inside].max() - z[inside].min()) > 1e-3:
        zi, gi = z[inside], g[inside]
        a = torch.stack([zi, torch.ones_like(zi)], 1)
        slope, offset = (float(v) for v in torch.linalg.lstsq(a, gi[:, None]).solution[:, 0])
        for s, o in ((slope, offset), HARDSIGMOID, (0.2, 0.5)):
            if s > 0 and torch.allclose(torch.clamp(s * z + o, 0, 1), g, atol=FIT_TOL, rtol=0):
                s, o = _snap(s, o)
                return "hardsigmoid", s, o
    return (seen[0] if seen else "an unrecognized function"), None, None


def _snap(slope: float, offset: float) -> tuple[float, float]:
    """A fitted hard sigmoid as PyTorch's or ONNX's exact constants when it is one of them."""
    for s, o in (HARDSIGMOID, (0.2, 0.5)):
        if abs(slope - s) < 1e-4 and abs(offset - o) < 1e-4:
            return s, o
    return slope, offset


def as_matrix(layer: nn.Module) -> tuple[np.ndarray, np.ndarray]:
    """(weight [out, in], bias [out]) of a 1x1 conv or Linear (no bias: zeros)."""
    w = layer.weight.detach().float()
    w = w.reshape(w.shape[0], w.shape[1]).numpy().copy()
    b = (layer.bias.detach().float().numpy().copy() if layer.bias is not None
         else np.zeros(w.shape[0], np.float32))
    return w, b


def _pointwise(layer: nn.Module) -> bool:
    return isinstance(layer, nn.Linear) or (
        isinstance(layer, nn.Conv2d) and layer.kernel_size == (1, 1) and layer.groups == 1)


def _kernel_text(layer: nn.Module) -> str:
    if isinstance(layer, nn.Conv2d):
        k = "x".join(map(str, layer.kernel_size))
        return f"{k} conv" + (f" of {layer.groups} groups" if layer.groups > 1 else "")
    return type(layer).__name__


@dataclass
class _Record:
    """What the hooks saw of one candidate during the forward passes."""
    module: nn.Module
    first: nn.Module
    second: nn.Module
    calls: int = 0                      # calls in the first forward pass
    x: list = field(default_factory=list)          # inputs (float32 numpy), every batch
    probe: dict = field(default_factory=dict)      # first call's tensors
    between: list = field(default_factory=list)    # leaf classes between the layers
    after: list = field(default_factory=list)      # leaf classes after the second layer


def candidates(model: nn.Module) -> dict[str, tuple[nn.Module, nn.Module, nn.Module]]:
    """name -> (module, first, second) for modules with exactly two weight layers
    C -> hidden -> C (any kernel)."""
    out = {}
    for name, module in model.named_modules():
        layers = weight_layers(module)
        if len(layers) != 2:
            continue
        (c, h), (h2, c2) = (excite_io(m) for m in layers)
        if h == h2 and c == c2:
            out[name] = (module, layers[0], layers[1])
    return out


def find_blocks(model: nn.Module, images, batch: int = 256, keep_inputs: bool = True,
                name: str = "model") -> list[tuple[SEBlock, np.ndarray | None]]:
    """Every SE block of model run on images (float [N, ...], the model's input), in forward
    order of first call, each with the float activations that reached it ([N, C, H, W], or None
    unless keep_inputs). A ConfigError when the model has no SE block at all."""
    images = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if images.ndim < 2 or len(images) == 0:
        raise InputError(f"calibration: images of shape {list(images.shape)} are not allowed; "
                         "allowed: a non-empty batch [N, ...] of the model's input")
    records = {n: _Record(*c) for n, c in candidates(model).items()}
    order: list[str] = []
    state = {"first_pass": True, "active": []}
    handles = []
    for mod_name, rec in records.items():
        handles += _hooks(mod_name, rec, order, state, keep_inputs)
    def on_leaf(m, args, out):             # names the activations a probe sees
        for r in state["active"]:
            if r.probe.get("stage") == 1:
                r.between.append(type(m).__name__)
            elif r.probe.get("stage") == 2:
                r.after.append(type(m).__name__)

    for leaf in model.modules():
        if not list(leaf.children()) and not isinstance(leaf, (nn.Conv2d, nn.Linear)):
            handles.append(leaf.register_forward_hook(on_leaf))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for k in range(0, len(images), batch):
                model(images[k:k + batch])
                state["first_pass"] = False
    except Exception as e:                  # noqa: BLE001 (the user's model may raise anything)
        raise InputError(f"model: a forward pass on images of shape {list(images.shape[1:])} "
                         f"failed: {type(e).__name__}: {e}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    squeezed = [n for n in order if _squeezes(records[n])]
    inner = [n for n in squeezed if not any(o != n and o.startswith(n + ".") for o in squeezed)]
    if not inner:
        raise ConfigError(f"model: no SE block found in {name!r}; allowed: a model with SE "
                          "blocks (global pooling, then two 1x1 convs or linears C -> hidden -> "
                          "C, then input x gate)")
    out = []
    for n in inner:
        rec = records[n]
        block = describe(n or name, rec)
        xs = np.concatenate(rec.x) if keep_inputs and rec.x else None
        out.append((block, xs))
    return out


def _hooks(mod_name, rec, order, state, keep_inputs):
    def pre(m, args):
        if state["first_pass"]:
            rec.calls += 1
            if mod_name not in order:
                order.append(mod_name)
        x = args[0] if args and torch.is_tensor(args[0]) else None
        once = state["first_pass"] or rec.calls == 1      # a shared module: its first call
        if x is not None and keep_inputs and x.ndim == 4 and once:
            rec.x.append(x.detach().float().numpy().copy())
        if state["first_pass"] and "x" not in rec.probe and x is not None:
            rec.probe.update(x=x.detach().clone(), stage=0)
            state["active"].append(rec)

    def post(m, args, out):
        if rec in state["active"]:
            if torch.is_tensor(out):
                rec.probe["y"] = out.detach().clone()
            state["active"].remove(rec)

    def first_pre(m, args):
        if rec.probe.get("stage") == 0:
            rec.probe.update(s=args[0].detach().clone())

    def first_post(m, args, out):
        if rec.probe.get("stage") == 0:
            rec.probe.update(z1=out.detach().clone(), stage=1)

    def second_pre(m, args):
        if rec.probe.get("stage") == 1:
            rec.probe.update(a1=args[0].detach().clone())

    def second_post(m, args, out):
        if rec.probe.get("stage") == 1:
            rec.probe.update(z2=out.detach().clone(), stage=2)

    return [rec.module.register_forward_pre_hook(pre), rec.module.register_forward_hook(post),
            rec.first.register_forward_pre_hook(first_pre),
            rec.first.register_forward_hook(first_post),
            rec.second.register_forward_pre_hook(second_pre),
            rec.second.register_forward_hook(second_post)]


def _squeezes(rec: _Record) -> bool:
    """The block got a 4-D map and its first layer saw fewer positions (tse.quant.se_hooks's
    rule (2)): the squeeze happened inside it."""
    x, s = rec.probe.get("x"), rec.probe.get("s")
    if x is None or s is None or x.ndim != 4 or x.shape[1] != excite_io(rec.first)[0]:
        return False
    spatial = s.shape[2] * s.shape[3] if s.ndim == 4 else 1
    return spatial < x.shape[2] * x.shape[3]


def describe(name: str, rec: _Record) -> SEBlock:
    """The block's description; reason set when the unit cannot compute it."""
    p = rec.probe
    x = p["x"]
    c, h, w = (int(v) for v in x.shape[1:])
    hidden = excite_io(rec.first)[1]
    act = identify_activation(p["z1"], p.get("a1", p["z1"]), rec.between)
    z2 = p["z2"].reshape(x.shape[0], c)
    y = p.get("y")
    gate_vals, reason = None, None
    if y is None or tuple(y.shape) != tuple(x.shape):
        reason = "its output is not the shape of its input (not input x gate)"
    else:
        nz = x.abs() > 1e-6
        ratio = torch.where(nz, y / torch.where(nz, x, torch.ones_like(x)), torch.nan)
        gate_vals = torch.nanmean(ratio.flatten(2), 2)            # [N, C]
        spread = torch.where(nz, (ratio - gate_vals[..., None, None]).abs(), 0)
        seen = ~torch.isnan(gate_vals)          # a channel all zero shows no gate
        if not seen.any() or float(spread.max()) > 1e-3:
            reason = "its output is not its input times one gate per channel"
    gate, slope, offset = (identify_gate(z2[seen], gate_vals[seen], rec.after)
                           if gate_vals is not None and seen.any() else ("unknown", None, None))
    w1, b1 = as_matrix(rec.first) if _pointwise(rec.first) else (None, None)
    w2, b2 = as_matrix(rec.second) if _pointwise(rec.second) else (None, None)
    mean = x.mean((2, 3)).reshape(x.shape[0], c)
    s = p["s"].reshape(x.shape[0], -1)
    if reason is None:
        reason = next((f"{role} excite layer is a {_kernel_text(layer)}; allowed: 1x1 "
                       "convolutions or Linear" for role, layer in
                       (("the first", rec.first), ("the second", rec.second))
                       if not _pointwise(layer)), None)
    if reason is None and (s.shape != mean.shape
                           or not torch.allclose(s, mean, atol=1e-4, rtol=1e-4)):
        reason = ("its squeeze is not the mean over the whole map (e.g. max pooling or a "
                  "tiled pool); allowed: global average pooling")
    if reason is None and rec.calls > 1:
        reason = (f"the module is called {rec.calls} times in one forward pass (shared); "
                  "allowed: one call per block")
    if reason is None and act not in ("relu", "silu"):
        reason = f"its hidden activation is {act}; allowed: ReLU or SiLU"
    if reason is None and gate not in ("sigmoid", "hardsigmoid"):
        reason = f"its gate is {gate}; allowed: sigmoid or a hard sigmoid"
    zeros = np.zeros
    return SEBlock(name, c, h, w, hidden, act, gate, slope, offset,
                   w1 if w1 is not None else zeros((hidden, c), np.float32),
                   b1 if b1 is not None else zeros(hidden, np.float32),
                   w2 if w2 is not None else zeros((c, hidden), np.float32),
                   b2 if b2 is not None else zeros(c, np.float32),
                   None if reason is None else f"{name}: {reason}", type(rec.module).__name__)
