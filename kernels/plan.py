"""The network as a flat program for the compiled backends, built once at load from refimpl.spec.

Both backends (numba_backend.py, cython_backend.pyx) execute the same program; this module
holds everything that is decided once, in Python:

- BatchNorm folded into the conv weights and a bias: w' = w * s, b' = beta - mean * s with
  s = gamma / sqrt(var + eps), computed in float64 and rounded once to float32.
- Conv weights packed [ky][kx][c_in][c_out_padded] (output channels innermost and padded to a
  multiple of LANES), so the micro-kernel loads LANES output channels with one vector load.
- Activations live in NHWC buffers with a zero border as wide as the largest padding of the
  convs that read them; the border is written once (zeros at allocation) and never touched,
  so the kernels have no boundary tests. A conv reads a channel slice [ci0, ci0 + cin) of its
  source buffer and writes a channel slice of its destination buffer: the three stem branches
  write straight into one 48-channel "stem" buffer and gender/age branches into the 64-channel
  "top.concat" buffer (no concat copies).
- The first CBL+Pool of the three blocks that read the stem (gender_branch, age_branch,
  low_branch: 3x3, dilation 1, all followed by a pool) is merged into one conv 48 -> 56, which
  reads the stem once instead of three times; the three consumers read its channel slices.
- Every fused stage is one row of LAYER table (int64) so that a compiled executor runs the
  whole network in one call per batch, one image per thread at a time, in a per-thread
  workspace that is allocated once.
"""
from dataclasses import dataclass, field

import numpy as np

from refimpl import spec

LANES = 8            # output channels per vector: 8 float32 = 256 bits (two NEON registers on the Nano)

# Columns of the layer table, one row per fused conv(+bias+Leaky-ReLU(+max pool)) stage.
(SRC_OFF, SRC_WP, SRC_C, SRC_P, CI0, CIN, DST_OFF, DST_WP, DST_C, DST_P, CO0, CBUF,
 K, DIL, PAD, POOL, OH, OW, W_OFF, B_OFF, ALGO) = range(21)
N_FIELDS = 21
DIRECT, WINOGRAD = 0, 1          # values of the ALGO column
WINO_ROWS = 4                    # tile rows per block in conv_kernel.h's Winograd (AGK_WINO_ROWS)

# Head parameters, one flat float32 vector; offsets in HEAD_* (see Plan.heads).
HEAD_NAMES = ("gender_virtual.fc", "age_virtual.fc", "top_head.fc1", "top_head.fc_gender", "top_head.fc_age",
              "low_head.fc")


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


def _layer_output_name(block, cbl, pool, index_in_block):
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
                         self._same_kind(pending[b.name][0], first, weights, attrs, b, block)]
            for i, member in enumerate(group):
                done.add(member.name)
            self._emit_block_group(group, pending, where, size, concat_of, weights, attrs)

    def _same_kind(self, a, b, weights, attrs, block_a, block_b):
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
            outputs[_layer_output_name(block, cbl, pool, 0)] = (c0, cbl.cout)
            c0 += cbl.cout
        w, b = np.concatenate(ws), np.concatenate(bs)
        chains = {block.name: pending[block.name][1:] for block in group}
        ends = {block.name: not chains[block.name] for block in group}
        name = "|".join(outputs)
        dst = self._dst(name, [block for block in group if ends[block.name]], c0, where, size, concat_of, src_name,
                        pool, outputs, w.shape[0])
        self._add_stage(name, where[src_name], dst, w, b, pad, dil, pool, alpha, outputs, size[src_name], size)
        for tensor, (t0, tc) in outputs.items():
            where[tensor] = Slice(dst.buffer, dst.c0 + t0, tc)
            size[tensor] = size[name]
        for block in group:
            x = _layer_output_name(block, *pending[block.name][0], 0)
            for cbl, pool in chains[block.name]:
                wb, bb, pad, dil, alpha = self._folded(weights, attrs, block, cbl)
                out = _layer_output_name(block, cbl, pool, 0)
                last = (cbl, pool) == chains[block.name][-1]
                dst = self._dst(out, [block] if last else [], cbl.cout, where, size, concat_of, x, pool,
                                {out: (0, cbl.cout)}, cbl.cout)
                self._add_stage(out, where[x], dst, wb, bb, pad, dil, pool, alpha, {out: (0, cbl.cout)},
                                size[x], size)
                where[out] = Slice(dst.buffer, dst.c0, cbl.cout)
                size[out] = size[out] if out in size else size[x]
                x = out
            where[block.output] = where[x]
            size[block.output] = size[x]

    def _dst(self, name, ending_blocks, cout, where, size, concat_of, src_name, pool, outputs, c_total):
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

    def _add_stage(self, name, src, dst, w, b, pad, dil, pool, alpha, outputs, src_size, size):
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
        w_parts, b_parts, rows, w_off, b_off = [], [], [], 0, 0
        self.scratch_size = 0
        self.algos = []
        for st in self.stages:
            src, dst = self.buffers[st.src.buffer], self.buffers[st.dst.buffer]
            oh = src.h + 2 * st.pad - st.dilation * (st.k - 1)
            ow = src.w + 2 * st.pad - st.dilation * (st.k - 1)
            algo = WINOGRAD if self.winograd and winograd_applies(st.k, st.dilation, st.pad, oh, ow, st.src.c) \
                else DIRECT
            packed, bias = (winograd_weights if algo == WINOGRAD else pack_weights)(st.w, st.b)
            cbuf = packed.shape[-1]
            self.algos.append(algo)
            row = [0] * N_FIELDS
            row[SRC_OFF], row[SRC_WP], row[SRC_C], row[SRC_P] = src.offset, src.w + 2 * src.pad, src.channels, src.pad
            row[CI0], row[CIN] = st.src.c0, st.src.c
            row[DST_OFF], row[DST_WP], row[DST_C], row[DST_P] = dst.offset, dst.w + 2 * dst.pad, dst.channels, dst.pad
            row[CO0], row[CBUF] = st.dst.c0, cbuf
            row[K], row[DIL], row[PAD], row[POOL], row[OH], row[OW] = st.k, st.dilation, st.pad, int(st.pool), oh, ow
            row[W_OFF], row[B_OFF], row[ALGO] = w_off, b_off, algo
            assert st.dst.c0 + cbuf <= dst.channels, st.name
            rows.append(row)
            w_parts.append(np.pad(packed.ravel(), (0, round_up(packed.size, 16) - packed.size)))
            b_parts.append(bias)
            w_off += round_up(packed.size, 16)
            b_off += bias.size
            if algo == WINOGRAD:
                self.scratch_size = max(self.scratch_size,
                                        16 * (WINO_ROWS * (ow // 2) * (round_up(st.src.c, LANES) + cbuf) + 32))
            elif st.pool:
                self.scratch_size = max(self.scratch_size, 2 * ow * cbuf)
        self.layers = np.array(rows, np.int64)
        self.alphas = np.array([st.alpha for st in self.stages], np.float32)
        self.weights = np.concatenate(w_parts).astype(np.float32)
        self.biases = np.concatenate(b_parts).astype(np.float32)
        self.scratch_size = max(self.scratch_size, LANES)
        image = self.buffers["image"]
        self.image = np.array([image.offset, image.w + 2 * image.pad, image.channels, image.pad], np.int64)

    # -- heads ------------------------------------------------------------------------------------------
    def slice_of(self, tensor):
        """(buffer, c0, c) of a refimpl tensor name (a block output or a stage output)."""
        for st in self.stages:
            if tensor in st.outputs:
                t0, tc = st.outputs[tensor]
                return self.buffers[st.dst.buffer], st.dst.c0 + t0, tc
        raise KeyError(tensor)

    def _heads(self, weights, attrs):
        """GAP sources [4, 6] (offset, Wp, C, pad, c0, c for h*w pixels) and the FC parameters, flat."""
        sources = []
        for block in ("gender_branch", "age_branch", "top", "low_branch"):
            buf, c0, c = self.slice_of(spec.BLOCK_BY_NAME[block].output)
            sources.append([buf.offset, buf.w + 2 * buf.pad, buf.channels, buf.pad, c0, c, buf.h, buf.w])
        self.gap = np.array(sources, np.int64)
        parts = []
        for name in HEAD_NAMES:
            fc = spec.FC_BY_NAME[name]
            parts += [weights[name + ".weight"].reshape(fc.nout * fc.nin), weights[name + ".bias"]]
        self.head_params = np.concatenate(parts).astype(np.float32)
        self.head_alpha = np.float32(attrs["top_head.act1"]["alpha"])

    # -- for tests, run_stages and the benchmark ------------------------------------------------------------
    def stage_flops(self, stage_index):
        """Multiply-adds x 2 of one stage per image (padded output channels not counted)."""
        st, row = self.stages[stage_index], self.layers[stage_index]
        return 2 * int(row[OH]) * int(row[OW]) * st.src.c * st.dst.c * st.k * st.k

    def executed_flops(self, stage_index):
        """Multiply-adds x 2 the kernel actually runs for one image: Winograd stages 16 products per 2x2 output tile
        instead of 36 (transforms, additions only, not counted); padded output channels not counted."""
        if self.algos[stage_index] != WINOGRAD:
            return self.stage_flops(stage_index)
        st, row = self.stages[stage_index], self.layers[stage_index]
        return 2 * 16 * (int(row[OH]) // 2) * (int(row[OW]) // 2) * st.src.c * st.dst.c

    def read_slice(self, workspace, buffer, c0, c):
        """[C, H, W] copy of channels [c0, c0 + c) of a buffer's interior in one thread's workspace."""
        buf = self.buffers[buffer]
        hp, wp = buf.h + 2 * buf.pad, buf.w + 2 * buf.pad
        full = workspace[buf.offset: buf.offset + hp * wp * buf.channels].reshape(hp, wp, buf.channels)
        inner = full[buf.pad: buf.pad + buf.h, buf.pad: buf.pad + buf.w, c0: c0 + c]
        return np.ascontiguousarray(inner.transpose(2, 0, 1))
