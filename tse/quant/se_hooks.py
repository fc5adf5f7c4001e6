"""Find the SE blocks of a user's PyTorch model, for the buffer planner (`tse buffer --model`).

A module is taken as an SE block when
  1. its only convolutions or linears are two pointwise ones (1x1 conv or linear; norms and
     activations may sit between), the first C -> hidden, the second hidden -> C: the excite;
  2. in a forward pass it receives a 4-D feature map N x C x H x W and its first weight layer
     sees a smaller spatial extent than H x W: the squeeze (global pooling for SE, tile
     pooling for TSE) happened inside it.
This covers torchvision's SqueezeExcitation, pycls's SE, timm's SEModule / SqueezeExcite and
this project's tse.quant.float_block.TSE, whether pooling is a module or x.mean() in forward().
A bottleneck with a 3x3 conv fails (1), the excite MLP alone fails (2) (it gets the pooled
map), and so does an SE block on a 1 x 1 map, which has nothing to buffer anyway. When an SE
block is wrapped in a module that passes (1) and (2) too, the innermost one is reported.

One forward pass on zeros of the given input size (N = 1) records, in forward order, each SE
block's C, H, W and hidden width; a block called twice appears twice.

The model comes from a file (both run the file's code, so load only files you trust):
  - a Python file defining build_model() that returns an nn.Module, or
  - a full model saved with torch.save(model, path) (its classes must be importable).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from tse.ref_model.errors import ConfigError, InputError
from tse.ref_model.networks import Network, SELayer

def load_model(path: str | Path) -> nn.Module:
    """A model from a .py file with build_model(), or from a torch.save'd nn.Module."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"model: file {str(path)!r} does not exist")
    if path.suffix == ".py":
        spec = importlib.util.spec_from_file_location(f"_tse_user_model_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise InputError(f"model: running {str(path)!r} failed: "
                             f"{type(e).__name__}: {e}") from None
        if not callable(getattr(module, "build_model", None)):
            raise ConfigError(f"model: {str(path)!r} defines no build_model(); allowed: a "
                              "Python file with build_model() returning an nn.Module, or a "
                              "torch.save'd model")
        model = module.build_model()
    else:
        try:
            model = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:
            raise InputError(f"model: cannot load {str(path)!r} with torch.load: "
                             f"{type(e).__name__}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model: {str(path)!r} gives a {type(model).__name__}; "
                          "allowed: an nn.Module")
    return model


def weight_layers(module: nn.Module) -> list[nn.Module]:
    """The convolutions and linears inside module (itself included), in definition order."""
    return [m for m in module.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))]


def _excite_layers(module: nn.Module):
    """(first, second, hidden) when module's weight layers are an SE excite, else None."""
    layers = weight_layers(module)
    if len(layers) != 2 or not all(_is_pointwise(m) for m in layers):
        return None
    (c_in, hidden), (hidden2, c_out) = (excite_io(m) for m in layers)
    if hidden != hidden2 or c_in != c_out:
        return None
    return layers[0], layers[1], hidden


def _is_pointwise(m: nn.Module) -> bool:
    if isinstance(m, nn.Linear):
        return True
    return (isinstance(m, nn.Conv2d) and m.kernel_size == (1, 1) and m.groups == 1)


def excite_io(m: nn.Module) -> tuple[int, int]:
    """(input, output) channels of a convolution or a linear."""
    if isinstance(m, nn.Linear):
        return m.in_features, m.out_features
    return m.in_channels, m.out_channels


def find_se_layers(model: nn.Module, input_size: tuple[int, int, int],
                   name: str = "model") -> Network:
    """The SE blocks of model for one input of size (C, H, W), in forward order."""
    candidates = {}
    for mod_name, module in model.named_modules():
        found = _excite_layers(module)
        if found:
            candidates[mod_name or name] = (module, found)

    calls = []                  # (module name, input shape, first excite layer's input shape)
    pending = {}
    handles = []
    for mod_name, (module, (first, _, _)) in candidates.items():
        def on_input(_m, args, mod_name=mod_name):
            pending[mod_name] = tuple(args[0].shape) if args and torch.is_tensor(args[0]) else ()

        def on_excite(_m, args, mod_name=mod_name):
            if mod_name in pending:
                calls.append((mod_name, pending.pop(mod_name), tuple(args[0].shape)))
        handles.append(module.register_forward_pre_hook(on_input))
        handles.append(first.register_forward_pre_hook(on_excite))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_size))
    except Exception as e:
        raise InputError(f"model: a forward pass on an input of size "
                         f"{'x'.join(map(str, input_size))} failed: "
                         f"{type(e).__name__}: {e}") from None
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    squeezed = []
    for mod_name, x_shape, excite_shape in calls:
        hidden = candidates[mod_name][1][2]
        if len(x_shape) != 4 or x_shape[1] != excite_io(candidates[mod_name][1][0])[0]:
            continue
        spatial = x_shape[2] * x_shape[3]
        excite_spatial = excite_shape[2] * excite_shape[3] if len(excite_shape) == 4 else 1
        if excite_spatial < spatial:
            squeezed.append((mod_name, x_shape, hidden))
    # Keep the innermost of nested matches: drop a match that contains another one.
    names = {n for n, _, _ in squeezed}
    inner = [s for s in squeezed
             if not any(other != s[0] and other.startswith(s[0] + ".") for other in names)]
    if not inner:
        raise ConfigError(f"model: no SE block found in {name!r}; allowed: a model with SE "
                          "blocks (global or tile pooling, then two 1x1 convs or linears "
                          "C -> hidden -> C)")
    seen: dict[str, int] = {}
    layers = []
    for mod_name, (_, c, h, w), hidden in inner:
        seen[mod_name] = seen.get(mod_name, 0) + 1
        label = mod_name if seen[mod_name] == 1 else f"{mod_name}#{seen[mod_name]}"
        layers.append(SELayer(label, c, h, w, hidden))
    return Network(name, tuple(layers),
                   f"SE blocks found by hooks in {name} at input "
                   f"{'x'.join(map(str, input_size))}")


def model_se_layers(path: str | Path, input_size: tuple[int, int, int]) -> Network:
    """Load a model file and find its SE blocks (see load_model and find_se_layers)."""
    return find_se_layers(load_model(path), input_size, name=Path(path).stem)
