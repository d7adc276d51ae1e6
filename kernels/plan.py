"""The network as tables for the compiled backends, built once at load from refimpl's spec, graph and weights.

Everything decided once, in Python: BatchNorm folded into the convs, weights packed for the micro-kernel
(or Winograd-transformed), NHWC buffers with zero borders laid out in one workspace, the fused stages
(STAGE records), the global average pools (VIEW) and the heads program (HEAD_STEP, compiled from
refimpl/graph.py's head nodes). Why each choice is fast: kernels/README.md.

STAGE, VIEW and HEAD_STEP are conv_kernel.h's structs agk_stage, agk_view and agk_head_step as NumPy
dtypes (tests/test_kernels_layout.py compares the layouts); the Numba backend reads the same arrays.
"""
from dataclasses import dataclass, field

import numpy as np

from refimpl import graph, spec

LANES = 8            # output channels per vector: 8 float32 = 256 bits (two NEON registers on the Nano)



def _record(*names, floats=("alpha",)):
    """A C-layout structured dtype: int64 fields, float32 for `floats` (C: int64_t and float, in this order)."""
    return np.dtype([(name, np.float32 if name in floats else np.int64) for name in names], align=True)


# One fused conv (+ bias + Leaky-ReLU (+ 2x2 max pool)) stage; the fields are explained in conv_kernel.h.
STAGE = _record("src_off", "src_wp", "src_c", "src_p", "ci0", "cin", "dst_off", "dst_wp", "dst_c", "dst_p", "co0",
                "cbuf", "k", "dil", "pad", "pool", "oh", "ow", "w_off", "b_off", "algo", "alpha")
# A channel slice of a buffer's interior: the input image, or a global average pool's source and its place in hv.
VIEW = _record("off", "wp", "channels", "pad", "c0", "c", "h", "w", "dst")
# One step of the heads on the per-image head vector hv.
HEAD_STEP = _record("op", "dst", "src", "src2", "src3", "n", "nin", "w_off", "b_off", "alpha")
FC, LEAKY, SIGMOID, MEAN3 = 0, 1, 2, 3         # HEAD_STEP ops (conv_kernel.h's AGK_FC, ...)
DIRECT, WINOGRAD = 0, 1                        # STAGE algo
WINO_ROWS = 4                    # tile rows per block in conv_kernel.h's Winograd (AGK_WINO_ROWS)


def round_up(n, m):
    return (n + m - 1) // m * m


def fold_batch_norm(w, gamma, beta, mean, var, eps):
    """conv(x, w) -> BN  ==  conv(x, w') + b'. w: [C_out, C_in, K, K]; the others [C_out]. -> float32 (w', b')."""
    s = gamma.astype(np.float64) / np.sqrt(var.astype(np.float64) + np.float64(np.float32(eps)))
    w_folded = w.astype(np.float64) * s[:, None, None, None]
    b_folded = beta.astype(np.float64) - mean.astype(np.float64) * s
    return w_folded.astype(np.float32), b_folded.astype(np.float32)


def winograd_weights(w, b=None):
    """w [C_out, C_in, 3, 3] -> U [16, C_in, C_out rounded up to LANES] with U[4 a + b] = (G w G^T)[a, b], the
    Winograd F(2x2, 3x3) weight transform (in float64, rounded once); b -> padded as in pack_weights."""
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    c_out, c_in = w.shape[:2]
    u = np.einsum("ak,oikl,bl->abio", g, w.astype(np.float64), g).reshape(16, c_in, c_out)
    packed = np.zeros((16, c_in, round_up(c_out, LANES)), np.float32)
    packed[:, :, :c_out] = u
    return packed, pack_weights(w, b)[1]


def fill(record, **fields):
    """Set a structured record's fields by name (a missing or unknown field is an error, not a zero)."""
    if set(fields) != set(record.dtype.names):
        raise ValueError(f"{record.dtype.names}: missing {set(record.dtype.names) - set(fields)}, unknown "
                         f"{set(fields) - set(record.dtype.names)}")
    for name, value in fields.items():
        record[name] = value


def step(op, dst, src, src2=0, src3=0, n=1, nin=0, w_off=0, b_off=0, alpha=0.0):
    """A HEAD_STEP record (see conv_kernel.h for what each op computes)."""
    record = np.zeros((), HEAD_STEP)
    fill(record, op=op, dst=dst, src=src, src2=src2, src3=src3, n=n, nin=nin, w_off=w_off, b_off=b_off, alpha=alpha)
    return record


def stage_scratch(algo, pool, ow, cin, cbuf):
    """Floats of scratch one stage needs (conv_kernel.h): the Winograd V and M blocks, or two conv rows to pool."""
    if algo == WINOGRAD:
        return 16 * (WINO_ROWS * (ow // 2) * (round_up(cin, LANES) + cbuf) + 32)
    return max(2 * ow * cbuf if pool else 0, LANES)


def winograd_applies(k, dilation, pad, oh, ow, c_in):
    """Winograd F(2x2, 3x3) where it is exact in shape (3x3, 'same', even output) and pays: its transforms
    cost per channel, its savings per channel pair, so tiny inputs or outputs stay direct."""
    return k == 3 and dilation == 1 and pad == 1 and oh % 2 == 0 and ow % 2 == 0 and oh * ow >= 64 and c_in >= 8


def pack_weights(w, b=None):
    """w [C_out, C_in, K, K] -> [K, K, C_in, C_out rounded up to LANES] (zeros in the padding); b -> padded too."""
    c_out, c_in, k, _ = w.shape
    cbuf = round_up(c_out, LANES)
    packed = np.zeros((k, k, c_in, cbuf), np.float32)
    packed[:, :, :, :c_out] = w.transpose(2, 3, 1, 0)
    bias = np.zeros(cbuf, np.float32)
    if b is not None:
        bias[:c_out] = b
    return packed, bias


@dataclass
class Buffer:
    """One NHWC activation of one image: interior h x w, `channels` per pixel, a zero border `pad` wide."""
    name: str
    h: int
    w: int
    channels: int
    pad: int = 0
    offset: int = 0                      # in floats, inside one thread's workspace

    @property
    def size(self):
        return (self.h + 2 * self.pad) * (self.w + 2 * self.pad) * self.channels


@dataclass
class Slice:
    """A tensor of the network: channels [c0, c0 + c) of a buffer."""
    buffer: str
    c0: int
    c: int


@dataclass
class Stage:
    """One fused conv + bias + Leaky-ReLU (+ max pool 2x2) writing one slice of a buffer."""
    name: str
    src: Slice
    dst: Slice
    w: np.ndarray                        # folded [C_out, C_in, K, K]
    b: np.ndarray                        # [CBUF]
    k: int
    dilation: int
    pad: int
    pool: bool
    alpha: float
    outputs: dict = field(default_factory=dict)   # refimpl tensor name -> channel range inside dst


def _fused_layers(block):
    """A block's layers as [(CBL, followed by a pool?)]."""
    out, layers = [], list(block.layers)
    for i, layer in enumerate(layers):
        if isinstance(layer, spec.Pool):
            if i == 0 or not isinstance(layers[i - 1], spec.CBL):
                raise NotImplementedError(f"{block.name}.{layer.name}: a pool not after a conv is not fused")
            continue
        out.append((layer, i + 1 < len(layers) and isinstance(layers[i + 1], spec.Pool)))
    return out


def _layer_output_name(block, cbl, pool):
    """The refimpl trace name of a fused layer's output: the pool's if pooled, else the activation's."""
    if pool:
        pools = [l for l in block.layers[:block.layers.index(cbl) + 2] if isinstance(l, spec.Pool)]
        return f"{block.name}.{pools[-1].name}"
    return f"{block.name}.{cbl.names[2]}"


class Plan:
    """Buffers, stages and head parameters of the network for given weights and attributes."""

    def __init__(self, weights, attrs, merge=True, winograd=True):
        self.buffers = {}
        self.stages = []
        self.winograd = winograd
        self._build(weights, attrs, merge)
        self._layout()
        self._heads(weights, attrs)

    # -- building ---------------------------------------------------------------------------------------
    def _folded(self, weights, attrs, block, cbl):
        conv, bn, act = (f"{block.name}.{n}" for n in cbl.names)
        w, b = fold_batch_norm(weights[conv + ".weight"],
                               *(weights[f"{bn}.{p}"] for p in ("weight", "bias", "running_mean", "running_var")),
                               attrs[bn]["epsilon"])
        pads, dilations = attrs[conv]["pads"], attrs[conv]["dilations"]
        return w, b, pads[0], dilations[0], float(attrs[act]["alpha"])

    def _build(self, weights, attrs, merge):
        h, w = spec.INPUT_SHAPE[1:]
        self.buffers["image"] = Buffer("image", h, w, spec.INPUT_SHAPE[0])
        # where each named tensor lives: a whole buffer, or a slice of a concat buffer
        where = {"image": Slice("image", 0, spec.INPUT_SHAPE[0])}
        size = {"image": (h, w)}
        # concat consumers: "stem" and every block with several sources get one buffer, producers write slices
        concat_of = {}
        concats = [("stem", spec.STEM_BLOCKS)] + [(b.input, b.sources) for b in spec.BLOCKS
                                                  if len(b.sources) > 1]
        for name, sources in concats:
            c0 = 0
            for src in sources:
                concat_of[src] = (name, c0)
                c0 += spec.block_channels(src)
            where[name] = Slice(name, 0, c0)
        pending = {b.name: _fused_layers(b) for b in spec.BLOCKS}
        done = set()
        for block in spec.BLOCKS:
            if block.name in done:
                continue
            src_name = block.input
            group = [block]
            if merge:   # blocks reading the same tensor whose first CBL(+pool) has the same shape: one conv
                first = pending[block.name][0]
                group = [b for b in spec.BLOCKS if b.name not in done and
                         b.input == src_name and
                         self._same_kind(pending[b.name][0], first, attrs, b, block)]
            done.update(member.name for member in group)
            self._emit_block_group(group, pending, where, size, concat_of, weights, attrs)

    def _same_kind(self, a, b, attrs, block_a, block_b):
        (cbl_a, pool_a), (cbl_b, pool_b) = a, b
        alpha_a = attrs[f"{block_a.name}.{cbl_a.names[2]}"]["alpha"]
        alpha_b = attrs[f"{block_b.name}.{cbl_b.names[2]}"]["alpha"]
        conv_a, conv_b = attrs[f"{block_a.name}.{cbl_a.names[0]}"], attrs[f"{block_b.name}.{cbl_b.names[0]}"]
        return (cbl_a.k == cbl_b.k and pool_a == pool_b and alpha_a == alpha_b and conv_a == conv_b)

    def _emit_block_group(self, group, pending, where, size, concat_of, weights, attrs):
        src_name = group[0].input
        # the first fused layer of every block in the group, merged along output channels
        ws, bs, outputs, c0 = [], [], {}, 0
        for block in group:
            cbl, pool = pending[block.name][0]
            w, b, pad, dil, alpha = self._folded(weights, attrs, block, cbl)
            ws.append(w)
            bs.append(b)
            outputs[_layer_output_name(block, cbl, pool)] = (c0, cbl.cout)
            c0 += cbl.cout
        w, b = np.concatenate(ws), np.concatenate(bs)
        chains = {block.name: pending[block.name][1:] for block in group}
        ends = {block.name: not chains[block.name] for block in group}
        name = "|".join(outputs)
        dst = self._dst(name, [block for block in group if ends[block.name]], c0, where, size, concat_of, src_name,
                        pool, w.shape[0])
        self._add_stage(name, where[src_name], dst, w, b, pad, dil, pool, alpha, outputs)
        for tensor, (t0, tc) in outputs.items():
            where[tensor] = Slice(dst.buffer, dst.c0 + t0, tc)
            size[tensor] = size[name]
        for block in group:
            x = _layer_output_name(block, *pending[block.name][0])
            for cbl, pool in chains[block.name]:
                wb, bb, pad, dil, alpha = self._folded(weights, attrs, block, cbl)
                out = _layer_output_name(block, cbl, pool)
                last = (cbl, pool) == chains[block.name][-1]
                dst = self._dst(out, [block] if last else [], cbl.cout, where, size, concat_of, x, pool, cbl.cout)
                self._add_stage(out, where[x], dst, wb, bb, pad, dil, pool, alpha, {out: (0, cbl.cout)})
                where[out] = Slice(dst.buffer, dst.c0, cbl.cout)
                size[out] = size[out] if out in size else size[x]
                x = out
            where[block.output] = where[x]
            size[block.output] = size[x]

    def _dst(self, name, ending_blocks, cout, where, size, concat_of, src_name, pool, c_total):
        """Where a stage writes: a slice of a concat buffer if its block output feeds a concat, else a new buffer."""
        h, w = size[src_name]
        oh, ow = (h // 2, w // 2) if pool else (h, w)
        size[name] = (oh, ow)
        if len(ending_blocks) == 1 and ending_blocks[0].name in concat_of:
            buf, c0 = concat_of[ending_blocks[0].name]
            size[buf] = (oh, ow)
            if buf not in self.buffers:
                total = where[buf].c
                self.buffers[buf] = Buffer(buf, oh, ow, round_up(total, LANES))
            if c0 % LANES or round_up(cout, LANES) != cout:
                raise NotImplementedError(f"{name}: writes channels [{c0}, {c0 + cout}) of '{buf}', which is not a "
                                          f"whole number of {LANES}-channel vectors")
            return Slice(buf, c0, cout)
        self.buffers[name] = Buffer(name, oh, ow, round_up(c_total, LANES))
        return Slice(name, 0, c_total)

    def _add_stage(self, name, src, dst, w, b, pad, dil, pool, alpha, outputs):
        buf = self.buffers[src.buffer]
        buf.pad = max(buf.pad, pad)
        self.stages.append(Stage(name, src, dst, w, b, w.shape[2], dil, pad, pool, alpha, outputs))

    # -- layout -----------------------------------------------------------------------------------------
    def _layout(self):
        offset = 0
        for buf in self.buffers.values():
            buf.offset = offset
            offset += round_up(buf.size, 16)
        self.workspace_size = offset + 2 * LANES    # slack: Winograd reads whole vectors past a channel slice
        w_parts, b_parts, w_off, b_off = [], [], 0, 0
        self.scratch_size = 0
        self.stages_table = np.zeros(len(self.stages), STAGE)
        for st, row in zip(self.stages, self.stages_table):
            src, dst = self.buffers[st.src.buffer], self.buffers[st.dst.buffer]
            oh = src.h + 2 * st.pad - st.dilation * (st.k - 1)
            ow = src.w + 2 * st.pad - st.dilation * (st.k - 1)
            algo = WINOGRAD if self.winograd and winograd_applies(st.k, st.dilation, st.pad, oh, ow, st.src.c) \
                else DIRECT
            packed, bias = (winograd_weights if algo == WINOGRAD else pack_weights)(st.w, st.b)
            cbuf = packed.shape[-1]
            assert st.dst.c0 + cbuf <= dst.channels, st.name
            fill(row, src_off=src.offset, src_wp=src.w + 2 * src.pad, src_c=src.channels, src_p=src.pad,
                 ci0=st.src.c0, cin=st.src.c, dst_off=dst.offset, dst_wp=dst.w + 2 * dst.pad, dst_c=dst.channels,
                 dst_p=dst.pad, co0=st.dst.c0, cbuf=cbuf, k=st.k, dil=st.dilation, pad=st.pad, pool=int(st.pool),
                 oh=oh, ow=ow, w_off=w_off, b_off=b_off, algo=algo, alpha=st.alpha)
            w_parts.append(np.pad(packed.ravel(), (0, round_up(packed.size, 16) - packed.size)))
            b_parts.append(bias)
            w_off += round_up(packed.size, 16)
            b_off += bias.size
            self.scratch_size = max(self.scratch_size, stage_scratch(algo, st.pool, ow, st.src.c, cbuf))
        self.algos = [int(a) for a in self.stages_table["algo"]]
        self.weights = np.concatenate(w_parts).astype(np.float32)
        self.biases = np.concatenate(b_parts).astype(np.float32)
        self.image = self.view("image", 0, spec.INPUT_SHAPE[0])

    def view(self, buffer, c0, c, dst=0):
        """A VIEW record (array of one) of channels [c0, c0 + c) of a buffer's interior."""
        buf = self.buffers[buffer]
        v = np.zeros(1, VIEW)
        fill(v[0], off=buf.offset, wp=buf.w + 2 * buf.pad, channels=buf.channels, pad=buf.pad, c0=c0, c=c, h=buf.h,
             w=buf.w, dst=dst)
        return v

    # -- heads ------------------------------------------------------------------------------------------
    def slice_of(self, tensor):
        """(buffer, c0, c) of a refimpl tensor name (a block output or a stage output)."""
        for st in self.stages:
            if tensor in st.outputs:
                t0, tc = st.outputs[tensor]
                return self.buffers[st.dst.buffer], st.dst.c0 + t0, tc
        raise KeyError(tensor)

    def _heads(self, weights, attrs):
        """The heads of refimpl/graph.py (every node from the first GlobalAveragePool on) as `pools` (VIEW: each
        global average pool's source and its place in the head vector) and `head_steps` (HEAD_STEP) over one
        image's head vector of `head_size` floats; `head_params` holds the FC weights and biases, `head_slots`
        {tensor name: (offset, width)} where each named head tensor lives in the vector."""
        nodes = graph.nodes()
        nodes = nodes[next(i for i, n in enumerate(nodes) if n.op == "GlobalAveragePool"):]
        slots, pools, steps, params = {}, [], [], []
        size = params_size = 0

        def new(name, width):
            nonlocal size
            slots[name] = (size, width)
            size += width
            return slots[name][0]

        for node in nodes:
            x = slots.get(node.inputs[0])
            if node.op == "GlobalAveragePool":
                buf, c0, c = self.slice_of(node.inputs[0])
                pools.append(self.view(buf.name, c0, c, dst=new(node.outputs[0], c))[0])
            elif node.op == "Flatten":            # [N, C, 1, 1] -> [N, C]: the same floats, under refimpl's name
                slots[node.outputs[0]] = slots.pop(node.inputs[0])
            elif node.op == "Split":
                part = x[1] // len(node.outputs)
                for i, name in enumerate(node.outputs):
                    slots[name] = (x[0] + i * part, part)
            elif node.op == "Gemm":
                w, b = weights[node.inputs[1]], weights[node.inputs[2]]
                if node.attrs.get("transB") != 1 or w.shape[1] != x[1]:
                    raise NotImplementedError(f"kernels: {node.name}: a Gemm that is not x @ W.T + b")
                steps.append(step(FC, new(node.outputs[0], w.shape[0]), x[0], n=w.shape[0], nin=w.shape[1],
                                  w_off=params_size, b_off=params_size + w.size))
                params += [w.ravel(), b]
                params_size += w.size + b.size
            elif node.op in ("LeakyRelu", "Sigmoid"):
                op, alpha = (LEAKY, attrs[node.name]["alpha"]) if node.op == "LeakyRelu" else (SIGMOID, 0)
                steps.append(step(op, new(node.outputs[0], x[1]), x[0], n=x[1], alpha=alpha))
            elif node.op == "Mean" and len(node.inputs) == 3:
                a, b, c = (slots[name] for name in node.inputs)
                steps.append(step(MEAN3, new(node.outputs[0], x[1]), a[0], src2=b[0], src3=c[0], n=x[1]))
            else:
                raise NotImplementedError(f"kernels: the compiled heads have no {node.op} ({node.name})")
        self.pools = np.array(pools, VIEW)
        self.head_steps = np.array(steps, HEAD_STEP)
        self.head_params = np.concatenate(params).astype(np.float32)
        self.head_slots, self.head_size = slots, size

    # -- for tests, run_stages and the benchmark ------------------------------------------------------------
    def stage_flops(self, stage_index):
        """Multiply-adds x 2 of one stage per image (padded output channels not counted)."""
        st, row = self.stages[stage_index], self.stages_table[stage_index]
        return 2 * int(row["oh"]) * int(row["ow"]) * st.src.c * st.dst.c * st.k * st.k

    def executed_flops(self, stage_index):
        """Multiply-adds x 2 the kernel actually runs for one image: Winograd stages 16 products per 2x2 output tile
        instead of 36 (transforms, additions only, not counted); padded output channels not counted."""
        if self.algos[stage_index] != WINOGRAD:
            return self.stage_flops(stage_index)
        st, row = self.stages[stage_index], self.stages_table[stage_index]
        return 2 * 16 * (int(row["oh"]) // 2) * (int(row["ow"]) // 2) * st.src.c * st.dst.c

    def read_slice(self, workspace, buffer, c0, c):
        """[C, H, W] copy of channels [c0, c0 + c) of a buffer's interior in one thread's workspace."""
        buf = self.buffers[buffer]
        hp, wp = buf.h + 2 * buf.pad, buf.w + 2 * buf.pad
        full = workspace[buf.offset: buf.offset + hp * wp * buf.channels].reshape(hp, wp, buf.channels)
        inner = full[buf.pad: buf.pad + buf.h, buf.pad: buf.pad + buf.w, c0: c0 + c]
        return np.ascontiguousarray(inner.transpose(2, 0, 1))
