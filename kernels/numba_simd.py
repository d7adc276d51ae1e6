"""Eight-lane float32 vectors for Numba: a numba type and a handful of intrinsics, emitted as LLVM IR.

Why: LLVM's loop vectorizer only keeps accumulators in registers for reductions in the innermost
loop, and its SLP vectorizer did not pack our scalar accumulators (measured: scalar vfmadd231ss,
~4 GFLOP/s). With an explicit `<8 x float>` value type the micro-kernel in numba_backend.py holds
RX x NV vector accumulators in registers, like conv_kernel.h does in C.

Portability: `<8 x float>` is target-independent LLVM IR. Numba compiles for the host CPU, so LLVM
lowers it to one AVX register with FMA on this x86 machine, two SSE registers on an x86-64 without
AVX, two NEON registers with fmla on the Jetson Nano's Cortex-A57. No flags needed: Numba always
targets the CPU it runs on (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES override it, e.g. for a cache
built on one machine and used on another).

All indices are in float32 elements into 1-D C-contiguous float32 arrays, or from the integer address of
one (arr.ctypes.data, see _element_pointer); nothing is bounds-checked.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, models, register_model

LANES = 8
_VEC = ir.VectorType(ir.FloatType(), LANES)


class Float32x8(types.Type):
    """The numba type of an 8 x float32 vector value (lives in registers; not storable in arrays)."""

    def __init__(self):
        super().__init__(name="float32x8")


float32x8 = Float32x8()


@register_model(Float32x8)
class _Float32x8Model(models.PrimitiveModel):
    def __init__(self, dmm, fe_type):
        super().__init__(dmm, fe_type, _VEC)


def _element_pointer(context, builder, array_type, array, index):
    """&array[index]: `array` is a float32 array, or the integer address of one (arr.ctypes.data). Addresses let
    the hot inner functions take no array arguments, so numba emits no reference counting around their calls."""
    if isinstance(array_type, types.Integer):
        data = builder.inttoptr(array, ir.PointerType(ir.FloatType()))
    else:
        data = context.make_array(array_type)(context, builder, array).data
    return builder.gep(data, [index])


@intrinsic
def vload(typingctx, array, index):
    """array[index : index + 8] as a vector (unaligned load)."""
    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return builder.load(builder.bitcast(ptr, _VEC.as_pointer()), align=4)
    return float32x8(array, index), codegen


@intrinsic
def vstore(typingctx, array, index, value):
    """array[index : index + 8] = value (unaligned store)."""
    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        builder.store(args[2], builder.bitcast(ptr, _VEC.as_pointer()), align=4)
        return context.get_dummy_value()
    return types.void(array, index, value), codegen


def _splat(builder, scalar):
    v = builder.insert_element(ir.Constant(_VEC, ir.Undefined), scalar, ir.Constant(ir.IntType(32), 0))
    return builder.shuffle_vector(v, ir.Constant(_VEC, ir.Undefined),
                                  ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))


@intrinsic
def vbroadcast_at(typingctx, array, index):
    """array[index] in every lane (one broadcast load, no bounds or wraparound check)."""
    def codegen(context, builder, sig, args):
        ptr = _element_pointer(context, builder, sig.args[0], args[0], args[1])
        return _splat(builder, builder.load(ptr, align=4))
    return float32x8(array, index), codegen


@intrinsic
def vzero(typingctx):
    def codegen(context, builder, sig, args):
        return ir.Constant(_VEC, [0.0] * LANES)
    return float32x8(), codegen


@intrinsic
def vfma(typingctx, a, b, c):
    """a * b + c, lane by lane, fused (llvm.fma: one rounding; a mul and an add where the CPU has no FMA)."""
    def codegen(context, builder, sig, args):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(_VEC, [_VEC] * 3), "llvm.fma.v8f32")
        return builder.call(fn, list(args))
    return float32x8(float32x8, float32x8, float32x8), codegen


@intrinsic
def vadd(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fadd(args[0], args[1])
    return float32x8(float32x8, float32x8), codegen


@intrinsic
def vsub(typingctx, a, b):
    def codegen(context, builder, sig, args):
        return builder.fsub(args[0], args[1])
    return float32x8(float32x8, float32x8), codegen


@intrinsic
def vmax(typingctx, a, b):
    """a >= b ? a : b, lane by lane."""
    def codegen(context, builder, sig, args):
        return builder.select(builder.fcmp_ordered(">=", args[0], args[1]), args[0], args[1])
    return float32x8(float32x8, float32x8), codegen


@intrinsic
def vleaky(typingctx, x, alpha):
    """x >= 0 ? x : alpha * x, lane by lane (as refimpl's np.where(x >= 0, x, x * alpha))."""
    def codegen(context, builder, sig, args):
        x, alpha = args
        alpha = context.cast(builder, alpha, sig.args[1], types.float32)
        keep = builder.fcmp_ordered(">=", x, ir.Constant(_VEC, [0.0] * LANES))
        return builder.select(keep, x, builder.fmul(x, _splat(builder, alpha)))
    return float32x8(float32x8, alpha), codegen
