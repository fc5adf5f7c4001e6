"""Every SE block of an ONNX model, matched in its graph, and the activations that reach it.

The pattern, from the block's input tensor X:

    X -> GlobalAveragePool | ReduceMean(axes 2, 3) -> [Flatten | Reshape | Squeeze ...]
      -> Conv 1x1 | Gemm | MatMul [+ Add]                  (first excite layer, C -> hidden)
      -> Relu | Sigmoid and Mul (SiLU) | ...               (hidden activation)
      -> Conv 1x1 | Gemm | MatMul [+ Add]                  (second excite layer, hidden -> C)
      -> Sigmoid | HardSigmoid(alpha, beta) | ...          (gate)
      -> [Reshape | Unsqueeze ...] -> Mul with X

Weights and biases are read from the graph's initializers (or Constant nodes). A pooled
tensor that feeds something else than this chain is not an SE block; a chain that matches
but that the unit cannot compute (another activation, a non-1x1 excite, a Clip gate, ...)
is reported with a one-line reason naming the block. Blocks are named after the first excite
layer's node (the exporter writes the PyTorch module path there: /blocks/blocks.0/se/...).

Activations come from onnxruntime with every block's X added to the graph's outputs.
"""
from __future__ import annotations

import numpy as np

from tse.ref_model.errors import ConfigError, InputError

from .model_import import HARDSIGMOID, SEBlock

PASS_THROUGH = ("Flatten", "Reshape", "Squeeze", "Unsqueeze", "Identity")
WEIGHT_OPS = ("Conv", "Gemm", "MatMul")


def load(path):
    """The ONNX ModelProto of a file; a one-line InputError when it is not one."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as e:                  # noqa: BLE001 (protobuf raises many kinds)
        raise InputError(f"model: {str(path)!r} is not a readable ONNX file "
                         f"({type(e).__name__}: {e})") from None


class Graph:
    """Producers, consumers and constants of an ONNX graph."""

    def __init__(self, model):
        from onnx import numpy_helper

        g = model.graph
        self.nodes = list(g.node)
        self.consts = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for n in self.nodes:
            if n.op_type == "Constant" and n.attribute:
                self.consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
        self.consumers: dict[str, list] = {}
        for n in self.nodes:
            for i in n.input:
                self.consumers.setdefault(i, []).append(n)

    def only_consumer(self, tensor: str):
        users = self.consumers.get(tensor, [])
        return users[0] if len(users) == 1 else None

    def attr(self, node, name, default=None):
        from onnx import helper
        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default


def _skip(g: Graph, tensor: str) -> str:
    """Follow shape-only ops from tensor while each is its only consumer."""
    while True:
        n = g.only_consumer(tensor)
        if n is None or n.op_type not in PASS_THROUGH:
            return tensor
        tensor = n.output[0]


def _global_pool(g: Graph, node) -> str | None:
    """"mean" for a global average over H and W, "max" for a global maximum, else None."""
    kind = {"GlobalAveragePool": "mean", "GlobalMaxPool": "max"}.get(node.op_type)
    if kind:
        return kind
    kind = {"ReduceMean": "mean", "ReduceMax": "max"}.get(node.op_type)
    return kind if kind and _over_hw(g, node) else None


def _over_hw(g: Graph, node) -> bool:
    axes = g.attr(node, "axes")
    if axes is None and len(node.input) > 1:
        axes = g.consts.get(node.input[1])
    return axes is not None and sorted(int(a) % 4 for a in np.ravel(axes)) == [2, 3]


def _weight_layer(g: Graph, node):
    """(weight [out, in], bias [out], output tensor, problem) of a Conv, Gemm or MatMul [+ Add]
    node whose weights are constants."""
    op = node.op_type
    if op == "Conv":
        w = g.consts.get(node.input[1])
        if w is None:
            return None, None, node.output[0], "its excite Conv has no constant weight"
        b = g.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        b = np.zeros(w.shape[0], np.float32) if b is None else b
        if w.ndim != 4 or w.shape[2:] != (1, 1) or (g.attr(node, "group", 1) or 1) != 1:
            k = "x".join(map(str, w.shape[2:]))
            return None, None, node.output[0], (f"an excite Conv is {k} of group "
                                                f"{g.attr(node, 'group', 1)}; allowed: 1x1, "
                                                "one group")
        return w.reshape(w.shape[0], w.shape[1]), b, node.output[0], None
    if op == "Gemm":
        w = g.consts.get(node.input[1])
        if w is None or g.attr(node, "transA", 0):
            return None, None, node.output[0], "its excite Gemm has no constant weight"
        w = w if g.attr(node, "transB", 0) else w.T
        w = w * float(g.attr(node, "alpha", 1.0))
        b = g.consts.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
        b = (np.zeros(w.shape[0], np.float32) if b is None
             else np.broadcast_to(b * float(g.attr(node, "beta", 1.0)), (w.shape[0],)))
        return w, b, node.output[0], None
    w = g.consts.get(node.input[1])                                      # MatMul: x @ W
    if w is None or w.ndim != 2:
        return None, None, node.output[0], "its excite MatMul has no constant 2-D weight"
    out, b = node.output[0], np.zeros(w.shape[1], np.float32)
    add = g.only_consumer(out)
    if add is not None and add.op_type == "Add":
        other = [i for i in add.input if i != out]
        if other and other[0] in g.consts:
            b, out = np.broadcast_to(g.consts[other[0]], (w.shape[1],)), add.output[0]
    return w.T, b, out, None


def _activation(g: Graph, tensor: str):
    """(name, output tensor) of the hidden activation applied to tensor."""
    users = g.consumers.get(tensor, [])
    ops = sorted(n.op_type for n in users)
    if ops == ["Relu"]:
        return "relu", users[0].output[0]
    if ops == ["Mul", "Sigmoid"]:                       # SiLU: x * sigmoid(x)
        sig = next(n for n in users if n.op_type == "Sigmoid")
        mul = next(n for n in users if n.op_type == "Mul")
        if sorted(mul.input) == sorted([tensor, sig.output[0]]):
            return "silu", mul.output[0]
    if len(users) == 1 and users[0].op_type not in WEIGHT_OPS:
        return users[0].op_type, users[0].output[0]
    return _unknown_to_weight(g, tensor)


def _unknown_to_weight(g: Graph, tensor: str, limit: int = 16):
    """(a name listing the ops, the input tensor of the next weight layer) when a chain of
    other ops leads from tensor to one weight layer, else (that name, None)."""
    seen, frontier, ops, target = set(), [tensor], [], None
    while frontier and len(seen) < limit:
        t = frontier.pop(0)
        for n in g.consumers.get(t, []):
            if n.op_type in WEIGHT_OPS:
                target = target or t
                continue
            if id(n) not in seen:
                seen.add(id(n))
                ops.append(n.op_type)
                frontier.extend(n.output)
    name = "ops " + ", ".join(dict.fromkeys(ops)) if ops else "no activation"
    return name, target


def _gate(g: Graph, tensor: str):
    """(gate, slope, offset, output tensor) of the gate applied to tensor."""
    n = g.only_consumer(tensor)
    if n is None:
        return "a branch", None, None, None
    if n.op_type == "Sigmoid":
        return "sigmoid", None, None, n.output[0]
    if n.op_type == "HardSigmoid":
        alpha, beta = float(g.attr(n, "alpha", 0.2)), float(g.attr(n, "beta", 0.5))
        # float32 attributes: 1/6 comes back as 0.16666667163...; name PyTorch's exactly
        for s, o in (HARDSIGMOID, (0.2, 0.5)):
            if abs(alpha - s) < 1e-6 and abs(beta - o) < 1e-6:
                alpha, beta = s, o
        return "hardsigmoid", alpha, beta, n.output[0]
    return n.op_type, None, None, n.output[0]


def scope_name(node, fallback: str) -> str:
    """The PyTorch module path of the module that emitted node, from the scope the exporter
    writes into its name ("/blocks/blocks.0/se/Mul" -> "blocks.0.se": a part that extends the
    previous one, "blocks.0" after "blocks", replaces it); fallback without a scope."""
    parts = [p for p in (node.name or "").split("/") if p][:-1]
    if not parts:
        return fallback
    path: list[str] = []
    for part in parts:
        if path and part.startswith(path[-1] + "."):
            path[-1] = part
        else:
            path.append(part)
    return ".".join(path)


def match(model) -> list[tuple[SEBlock, str]]:
    """(block, its input tensor X) for every SE-shaped chain of the graph, in node order.
    C, H and W are 0 here (shapes come from a run); reason is set for what the unit cannot
    compute."""
    g = Graph(model)
    found = []
    for pool in g.nodes:
        pooling = _global_pool(g, pool)
        if pooling is None:
            continue
        x = pool.input[0]
        first = g.only_consumer(_skip(g, pool.output[0]))
        if first is None or first.op_type not in WEIGHT_OPS:
            continue
        name = f"se{len(found)}"               # until the Mul names the module
        w1, b1, z1, problem = _weight_layer(g, first)
        act, a1 = ("unknown", None) if problem else _activation(g, z1)
        second = g.only_consumer(_skip(g, a1)) if a1 else None
        w2 = b2 = z2 = None
        if not problem and second is not None and second.op_type in WEIGHT_OPS:
            w2, b2, z2, problem = _weight_layer(g, second)
        elif not problem:
            continue                            # no second weight layer: not SE-shaped
        gate, slope, offset, gated = ("unknown", None, None, None) if problem else _gate(g, z2)
        mul = g.only_consumer(_skip(g, gated)) if gated else None
        if not problem and (mul is None or mul.op_type != "Mul" or x not in mul.input):
            continue                            # the gate does not rescale X: not SE
        if mul is not None:
            name = scope_name(mul, name)
        else:                                   # the module holding both pool and layer
            a, b = (scope_name(n, name).split(".") for n in (pool, first))
            common = []
            for u, v in zip(a, b):
                if u != v:
                    break
                common.append(u)
            name = ".".join(common) or name
        if not problem and pooling != "mean":
            problem = (f"its squeeze is {pool.op_type}; allowed: GlobalAveragePool or "
                       "ReduceMean over H and W")
        if not problem and (w1.shape[0] != w2.shape[1] or w1.shape[1] != w2.shape[0]):
            problem = (f"its excite is {w1.shape[1]} -> {w1.shape[0]} -> {w2.shape[0]}; "
                       "allowed: C -> hidden -> C")
        if not problem and act not in ("relu", "silu"):
            problem = f"its hidden activation is {act}; allowed: Relu or SiLU (Sigmoid and Mul)"
        if not problem and gate not in ("sigmoid", "hardsigmoid"):
            problem = f"its gate is {gate}; allowed: Sigmoid or HardSigmoid"
        c = int(w1.shape[1]) if w1 is not None else 0
        hidden = int(w1.shape[0]) if w1 is not None else 0
        f32 = np.float32
        block = SEBlock(name, c, 0, 0, hidden, act, gate, slope, offset,
                        np.zeros((hidden, c), f32) if w1 is None else w1.astype(f32),
                        np.zeros(hidden, f32) if b1 is None else np.array(b1, f32),
                        np.zeros((c, hidden), f32) if w2 is None else w2.astype(f32),
                        np.zeros(c, f32) if b2 is None else np.array(b2, f32),
                        None if problem is None else f"{name}: {problem}", x,
                        mul.output[0] if mul is not None else "")
        found.append((block, x))
    return found


def find_blocks(path, images, batch: int = 256, keep_inputs: bool = True
                ) -> list[tuple[SEBlock, np.ndarray | None]]:
    """Every SE block of an ONNX file run on images (the model's input), with H and W from the
    run and the activations that reached each (None unless keep_inputs)."""
    import onnx

    model = load(path)
    found = match(model)
    if not found:
        raise ConfigError(f"model: no SE block found in {str(path)!r}; allowed: a graph with "
                          "GlobalAveragePool or ReduceMean -> Conv/Gemm -> activation -> "
                          "Conv/Gemm -> Sigmoid or HardSigmoid -> Mul with the pooled input")
    tensors = list(dict.fromkeys(x for _, x in found))
    declared = {o.name for o in model.graph.output}
    for t in tensors:
        if t not in declared:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(t))
    images = np.asarray(images, dtype=np.float32)
    acts: dict[str, list] = {t: [] for t in tensors}
    try:
        session = make_session(model)
        inp = session.get_inputs()[0].name
        for k in range(0, len(images), batch):
            outs = session.run(tensors, {inp: images[k:k + batch]})
            for t, a in zip(tensors, outs):
                if keep_inputs or not acts[t]:
                    acts[t].append(a)
    except Exception as e:                  # noqa: BLE001 (onnxruntime's errors)
        raise InputError(f"model: onnxruntime failed on images of shape "
                         f"{list(images.shape[1:])}: {type(e).__name__}: {e}") from None
    out = []
    for block, x in found:
        a = np.concatenate(acts[x])
        if a.ndim != 4:
            block.reason = block.reason or f"{block.name}: its input is {a.ndim}-D; allowed: 4-D"
        else:
            block.height, block.width = int(a.shape[2]), int(a.shape[3])
        out.append((block, a if keep_inputs else None))
    return out


def make_session(model):
    """An onnxruntime CPU session of a ModelProto, on one thread, quiet."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options,
                                providers=["CPUExecutionProvider"])


class Runner:
    """The ONNX model's logits with chosen SE blocks computed by Python functions
    (tse network --model on a .onnx; the PyTorch counterpart is a forward hook).

    Each replaced block's Mul is removed and its output becomes a graph input; its input X
    becomes a graph output. The graph runs once per replaced block plus once: run k feeds the
    outputs computed so far (later ones as zeros, which nothing before them reads) and fetches
    block k's input, the last run the logits."""

    def __init__(self, path, blocks):
        import onnx

        self.model = load(path)
        self.plain = make_session(self.model)
        self.input = self.plain.get_inputs()[0].name
        self.output = self.plain.get_outputs()[0].name
        self.blocks = [b for b in blocks if b.output]
        cut = onnx.ModelProto()
        cut.CopyFrom(self.model)
        outs = {b.output for b in self.blocks}
        keep = [n for n in cut.graph.node if not (n.op_type == "Mul" and n.output[0] in outs)]
        del cut.graph.node[:]
        cut.graph.node.extend(keep)
        for b in self.blocks:
            cut.graph.input.append(onnx.helper.make_tensor_value_info(
                b.output, onnx.TensorProto.FLOAT, None))
            if b.where not in {o.name for o in cut.graph.output}:
                cut.graph.output.append(onnx.helper.make_empty_tensor_value_info(b.where))
        self.cut = make_session(cut)

    def __call__(self, x: np.ndarray, fns: dict | None = None) -> np.ndarray:
        """Logits on images x; fns: block name -> f(float input NCHW) -> float output (numpy),
        every block the runner was built with (None: the model as it is)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if not fns:
            return self.plain.run([self.output], {self.input: x})[0]
        feed = {self.input: x}
        for b in self.blocks:
            feed[b.output] = np.zeros((len(x), b.channels, b.height, b.width), np.float32)
        for b in self.blocks:
            xb = self.cut.run([b.where], feed)[0]
            feed[b.output] = np.ascontiguousarray(fns[b.name](xb), dtype=np.float32)
        return self.cut.run([self.output], feed)[0]
