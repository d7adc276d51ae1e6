"""The layer table: name, op, input and output shape, parameters, FLOPs, for `python -m refimpl summary`."""
import numpy as np

from . import graph, spec


def layer_table(model):
    """[(name, op, input shape, output shape, parameters, FLOPs)] for one image, in execution order.

    FLOPs count a multiply-add as 2 and cover Conv and Gemm (the spec's 97.0 MFLOP); element-wise ops
    (BatchNorm, LeakyReLU, pools, sigmoid, mean) are listed with their output sizes but counted as 0 here."""
    x = np.zeros((1, *spec.INPUT_SHAPE), np.float32)
    shapes = {name: value.shape[1:] for name, value in model.trace(x).items()}
    shapes["image"] = spec.INPUT_SHAPE
    rows = []
    for node in graph.nodes():
        if node.op == "Flatten":          # GAP + Flatten are one step here: [N, C, H, W] -> [N, C]
            continue
        name = node.name.replace(".gap4d", ".gap")
        in_shape = shapes[node.inputs[0]]
        node_out = (2,) if node.op == "Split" else shapes[name]
        params = sum(int(np.prod(model.weights[i].shape)) for i in node.inputs if i in model.weights)
        flops = 0
        if node.op == "Conv":
            w = model.weights[node.inputs[1]].shape
            flops = 2 * int(np.prod(w)) * int(np.prod(node_out[1:]))
        elif node.op == "Gemm":
            flops = 2 * int(np.prod(model.weights[node.inputs[1]].shape))
        rows.append((name, node.op, tuple(in_shape), tuple(node_out), params, flops))
    return rows


def format_table(rows):
    def shape(s):
        return "x".join(map(str, s))

    lines = [f"{'layer':<28}{'op':<20}{'input':>12}{'output':>12}{'params':>10}{'FLOPs':>13}"]
    for name, op, cin, cout, params, flops in rows:
        lines.append(f"{name:<28}{op:<20}{shape(cin):>12}{shape(cout):>12}{params:>10,}{flops:>13,}")
    trainable, running = spec.count_parameters()
    total_flops = sum(r[5] for r in rows)
    lines += ["", f"layers: {sum(r[1] == 'Conv' for r in rows)} conv, {sum(r[1] == 'BatchNormalization' for r in rows)} "
                  f"batch norm, {sum(r[1] == 'MaxPool' for r in rows)} max pool, {sum(r[1] == 'Gemm' for r in rows)} "
                  f"fully connected",
              f"parameters: {trainable:,} trainable + {running:,} BatchNorm running statistics = "
              f"{trainable + running:,}",
              f"FLOPs per image: {total_flops / 1e6:.1f} M (a multiply-add counts 2; Conv and Gemm)"]
    return "\n".join(lines)
