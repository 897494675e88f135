"""A select without a branch, for the CPU kernels: `select_f32(c, a, b)` is `a if c else b` on
float32, bit for bit, computed as `(bits(a) & m) | (bits(b) & ~m)` with m all ones where c holds.

Why: a select whose condition comes from memory (relu's and max-pool's masks in a backward pass)
is made a branch by LLVM's x86 code generator, which bets a loaded condition is predictable. A
mask is not: the branch misses half the time. The CNN step's max-pool backward took 1.7 ms so
and 0.37 ms without the branch (`k27`, [32, 16, 28, 28], one thread). An empty inline asm holds the
mask, so the optimizer cannot see the and/or as a select again.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core.extending import intrinsic


@intrinsic
def select_f32(typingctx, c, a, b):
    sig = types.float32(c, types.float32, types.float32)

    def codegen(context, builder, signature, args):
        cond, x, y = args
        i32 = ir.IntType(32)
        mask = builder.sext(context.cast(builder, cond, signature.args[0], types.boolean), i32)
        mask = builder.call(ir.InlineAsm(ir.FunctionType(i32, [i32]), "", "=r,0"), [mask])
        xb, yb = builder.bitcast(x, i32), builder.bitcast(y, i32)
        bits = builder.or_(builder.and_(xb, mask), builder.and_(yb, builder.not_(mask)))
        return builder.bitcast(bits, ir.FloatType())
    return sig, codegen
