"""The architecture, once: every block, layer, size and name of the network.

docs/architecture.md in words, here as data. The PyTorch module (training/), the ONNX
writer and loader, the NumPy model, the kernels and the layer table all read it,
so a size changes in one place.

Naming: inside a block the i-th CBL is `conv{i}`, `bn{i}`, `act{i}` and the j-th
pool is `pool{j}`; a weight is `<block>.<layer>.<param>`, e.g.
`age_branch.conv2.weight`. The same names label the ONNX tensors and the entries
of `Model.trace`.
"""
from dataclasses import dataclass

INPUT_NAME = "image"
INPUT_SHAPE = (3, 64, 64)          # C, H, W of one image; the batch is dynamic
OUTPUT_NAMES = ("age", "gender", "age_final", "gender_final",
                "age_virtual", "gender_virtual", "age_low", "gender_low")
LEAKY_ALPHA = 0.1                  # written into the file; readers take it from there
BN_EPSILON = 1e-5
OPSET = 13                         # TensorRT 8.2 (JetPack 4.6, the Nano) reads up to 13
# Opsets a file may declare: every op of the graph means the same from 7 (ONNX Runtime's supported floor)
# to 17; from 18 Split needs 'num_outputs' or a 'split' input, so this graph is no longer valid there.
OPSET_MIN, OPSET_MAX = 7, 17
ARCH_VERSION = "agegender-cnn/1"


@dataclass(frozen=True)
class CBL:
    """Conv(cin->cout, k x k, dilation d, 'same' padding, no bias) -> BatchNorm -> LeakyReLU."""
    index: int
    cin: int
    cout: int
    k: int
    dilation: int = 1

    @property
    def pad(self):
        return self.dilation * (self.k // 2)

    @property
    def names(self):
        return f"conv{self.index}", f"bn{self.index}", f"act{self.index}"


@dataclass(frozen=True)
class Pool:
    """MaxPool 2x2, stride 2."""
    index: int

    @property
    def name(self):
        return f"pool{self.index}"


@dataclass(frozen=True)
class Block:
    """A chain of CBLs and pools fed by the channel concat of `sources`."""
    name: str
    sources: tuple
    layers: tuple

    @property
    def input(self):
        """The tensor the block reads: "image", "stem", or "<block>.concat" of its sources."""
        return self.sources[0] if len(self.sources) == 1 else f"{self.name}.concat"

    @property
    def output(self):
        """The tensor the block ends with: its last layer's output, e.g. "top.act2"."""
        last = self.layers[-1]
        return f"{self.name}.{last.name if isinstance(last, Pool) else last.names[2]}"


@dataclass(frozen=True)
class FC:
    """Fully connected nin -> nout (ONNX Gemm, weight [nout, nin], bias [nout])."""
    head: str
    name: str
    nin: int
    nout: int


BLOCKS = (
    Block("stem_fine", ("image",), (CBL(1, 3, 16, 3), Pool(1), CBL(2, 16, 16, 3))),
    Block("stem_wide", ("image",), (CBL(1, 3, 16, 5), Pool(1), CBL(2, 16, 16, 3))),
    Block("stem_dilated", ("image",), (CBL(1, 3, 16, 3, dilation=2), Pool(1), CBL(2, 16, 16, 3, dilation=2))),
    Block("gender_branch", ("stem",), (CBL(1, 48, 20, 3), Pool(1), CBL(2, 20, 32, 3), Pool(2))),
    Block("age_branch", ("stem",), (CBL(1, 48, 24, 3), Pool(1), CBL(2, 24, 32, 3), CBL(3, 32, 32, 3), Pool(2),
                                    CBL(4, 32, 32, 3))),
    Block("top", ("gender_branch", "age_branch"), (CBL(1, 64, 32, 1), Pool(1), CBL(2, 32, 44, 3))),
    Block("low_branch", ("stem",), (CBL(1, 48, 12, 3), Pool(1), CBL(2, 12, 16, 3), CBL(3, 16, 16, 3), Pool(2),
                                    CBL(4, 16, 24, 3), CBL(5, 24, 24, 3), Pool(3), CBL(6, 24, 24, 3))),
)
STEM_BLOCKS = ("stem_fine", "stem_wide", "stem_dilated")   # concatenated into "stem"

FCS = (
    FC("gender_virtual", "fc", 32, 1),     # GAP(gender_branch) -> sigmoid -> gender_virtual
    FC("age_virtual", "fc", 32, 1),        # GAP(age_branch) -> age_virtual
    FC("top_head", "fc1", 44, 28),         # GAP(top) -> (dropout) -> LeakyReLU
    FC("top_head", "fc_gender", 28, 1),    # -> sigmoid -> gender_final
    FC("top_head", "fc_age", 28, 1),       # -> age_final
    FC("low_head", "fc", 24, 2),           # GAP(low_branch): [:, 0] -> sigmoid -> gender_low, [:, 1] -> age_low
)
DROPOUT = 0.3                              # top head, training only

BLOCK_BY_NAME = {block.name: block for block in BLOCKS}
FC_BY_NAME = {f"{fc.head}.{fc.name}": fc for fc in FCS}


def block_channels(name):
    """Output channels of a block, "stem", or "image"."""
    if name == "image":
        return INPUT_SHAPE[0]
    if name == "stem":
        return sum(block_channels(b) for b in STEM_BLOCKS)
    return [layer for layer in BLOCK_BY_NAME[name].layers if isinstance(layer, CBL)][-1].cout


def parameter_shapes():
    """{initializer name: shape} for every weight of the file, in graph order.

    BatchNorm running statistics are included (they are not trainable)."""
    shapes = {}
    for block in BLOCKS:
        for layer in block.layers:
            if isinstance(layer, CBL):
                conv, bn, _ = layer.names
                shapes[f"{block.name}.{conv}.weight"] = (layer.cout, layer.cin, layer.k, layer.k)
                for param in ("weight", "bias", "running_mean", "running_var"):
                    shapes[f"{block.name}.{bn}.{param}"] = (layer.cout,)
    for fc in FCS:
        shapes[f"{fc.head}.{fc.name}.weight"] = (fc.nout, fc.nin)
        shapes[f"{fc.head}.{fc.name}.bias"] = (fc.nout,)
    return shapes


def is_running_statistic(name):
    return name.endswith(".running_mean") or name.endswith(".running_var")


def count_parameters():
    """(trainable, running statistics); the spec says (99_202, 920)."""
    trainable = running = 0
    for name, shape in parameter_shapes().items():
        size = 1
        for dim in shape:
            size *= dim
        if is_running_statistic(name):
            running += size
        else:
            trainable += size
    return trainable, running
