"""The C99 kernel library the generated code is built from.

Every kernel is a ``static`` function instantiated on demand for the element types it
needs, so a model's ``.c`` file only contains what that model calls and links with nothing
but libc and libm. Kernel names read ``tm_<kernel>_<types>``, e.g. ``tm_qconv2d_s8s8``
(int8 in, int8 out) or ``tm_unary_relu_f32``.

Quantized kernels follow TensorFlow Lite's integer arithmetic: int32 accumulators and
requantization with ``MultiplyByQuantizedMultiplier`` (a Q31 multiplier and a power-of-two
shift: a saturating doubling high multiply that rounds half up, then a division by a power
of two that rounds half away from zero), so int8 results match TFLite Micro bit for bit.
"""

from __future__ import annotations

import re
from string import Template

__all__ = ["C_TYPES", "PRELUDE", "kernel_dependencies", "kernel_source", "split_func"]

#: Element type codes used in kernel names, and their C types.
C_TYPES: dict[str, str] = {
    "f32": "float",
    "s8": "int8_t",
    "u8": "uint8_t",
    "s16": "int16_t",
    "u16": "uint16_t",
    "s32": "int32_t",
    "s64": "int64_t",
    "b8": "uint8_t",
    "b16": "uint16_t",
    "b32": "uint32_t",
    "b64": "uint64_t",
}
_RANGES: dict[str, tuple[int, int]] = {
    "s8": (-128, 127),
    "u8": (0, 255),
    "s16": (-32768, 32767),
    "u16": (0, 65535),
    "s32": (-2147483647 - 1, 2147483647),
}

PRELUDE = r"""
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Loop vectorisation pays off in the kernels; keep it even in -O2 builds, but not when
   optimising for size (microcontroller builds use -Os). */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__OPTIMIZE_SIZE__)
#pragma GCC optimize("O3")
#endif

#ifndef INFINITY
#define INFINITY (1.0f / 0.0f)
#endif

#if defined(__GNUC__)
#define TM_INLINE static inline __attribute__((always_inline))
#else
#define TM_INLINE static inline
#endif

/* TFLite SaturatingRoundingDoublingHighMul. */
TM_INLINE int32_t tm_srdhm(int32_t a, int32_t b) {
  if (a == b && a == INT32_MIN) return INT32_MAX;
  const int64_t ab = (int64_t)a * (int64_t)b;
  const int64_t nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
  return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* TFLite RoundingDivideByPOT: rounds half away from zero. */
TM_INLINE int32_t tm_rdbpot(int32_t x, int e) {
  const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
  const int32_t rem = x & mask;
  const int32_t thr = (mask >> 1) + (x < 0 ? 1 : 0);
  return (x >> e) + (rem > thr ? 1 : 0);
}

/* TFLite MultiplyByQuantizedMultiplier. */
TM_INLINE int32_t tm_mbqm(int32_t x, int32_t m, int32_t shift) {
  const int left = shift > 0 ? shift : 0;
  const int right = shift > 0 ? 0 : -shift;
  return tm_rdbpot(tm_srdhm((int32_t)((uint32_t)x << left), m), right);
}

#ifndef TM_TILE
#define TM_TILE 64
#endif

static inline int32_t tm_clampi(int32_t v, int32_t lo, int32_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

static inline float tm_clampf(float v, float lo, float hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

/* One element of TFLite's quantized Add; u and v are already offset by their zero points. */
TM_INLINE int32_t tm_qadd1(int32_t u, int32_t v, int32_t ma, int32_t sha, int32_t mb,
                               int32_t shb, int32_t my, int32_t shy, int32_t yz, int32_t lo,
                               int32_t hi) {
  const int32_t sum = tm_mbqm(u * (1 << 20), ma, sha) + tm_mbqm(v * (1 << 20), mb, shb);
  return tm_clampi(tm_mbqm(sum, my, shy) + yz, lo, hi);
}

/* First kernel tap k with i0 + k * d >= 0. */
static inline int tm_kbegin(int i0, int d) { return i0 >= 0 ? 0 : (-i0 + d - 1) / d; }

/* One past the last kernel tap k < kn with i0 + k * d < n. */
static inline int tm_kend(int i0, int d, int kn, int n) {
  if (i0 >= n) return 0;
  const int e = (n - i0 + d - 1) / d;
  return e < kn ? e : kn;
}
"""

_CONV_TILE = r"""
/* Accumulate one tile [t0, t1) of an output row: every (channel, ky, kx) tap adds a weight
   times a contiguous input run (for stride 1), so the inner loop is long and vectorises;
   padding is skipped, never read. Shared by the plain and the fused kernels. */
static void tm_${TILE}(const $XT* xg, const $WT* wm, $AT* acc, $AT bias, int cg, int H,
                       int W, int KH, int KW, int SW, int DH, int DW, int PL, int iy0,
                       int ky0, int ky1, int t0, int t1, $AT xz) {
  (void)xz;
  for (int i = 0; i < t1 - t0; ++i) acc[i] = bias;
  for (int c = 0; c < cg; ++c) {
    const $XT* xc = xg + (size_t)c * H * W;
    const $WT* wc = wm + c * KH * KW;
    for (int ky = ky0; ky < ky1; ++ky) {
      const $XT* xr = xc + (iy0 + ky * DH) * W;
      const $WT* wr = wc + ky * KW;
      for (int kx = 0; kx < KW; ++kx) {
        const $AT wv = ($AT)wr[kx];
        const int off = kx * DW - PL;
        int lo = t0, hi = t1;
        if (W - 1 - off < 0) continue;
        if (off < 0 && lo < (-off + SW - 1) / SW) lo = (-off + SW - 1) / SW;
        if (hi > (W - 1 - off) / SW + 1) hi = (W - 1 - off) / SW + 1;
        if (SW == 1) {
          for (int ox = lo; ox < hi; ++ox) acc[ox - t0] += wv * ($AT)(xr[ox + off] - xz);
        } else {
          for (int ox = lo; ox < hi; ++ox) acc[ox - t0] += wv * ($AT)(xr[ox * SW + off] - xz);
        }
      }
    }
  }
}
"""

_CONV_BODY = r"""
/* Direct convolution, one output row at a time in tiles of TM_TILE columns. */
#define TM_STORE(a, j) $STORE
static void tm_${NAME}(const $XT* x, const $WT* w, const $BT* b, $YT* y,
                       int N, int C, int H, int W, int M, int OH, int OW, int KH, int KW,
                       int SH, int SW, int PT, int PL, int DH, int DW, int G, $EXTRA) {
  const int cg = C / G, mg = M / G;
  $AT acc[TM_TILE];
  for (int n = 0; n < N; ++n) {
    for (int m = 0; m < M; ++m) {
      const $XT* xg = x + ((size_t)n * C + (size_t)(m / mg) * cg) * H * W;
      const $WT* wm = w + (size_t)m * cg * KH * KW;
      const $AT bias = b ? ($AT)b[m] : ($AT)0;
      $YT* ym = y + ((size_t)n * M + m) * OH * OW;
      $PRE
      for (int oy = 0; oy < OH; ++oy) {
        const int iy0 = oy * SH - PT;
        const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
        for (int t0 = 0; t0 < OW; t0 += TM_TILE) {
          const int t1 = t0 + TM_TILE < OW ? t0 + TM_TILE : OW;
          tm_${TILE}(xg, wm, acc, bias, cg, H, W, KH, KW, SW, DH, DW, PL, iy0, ky0, ky1, t0,
                     t1, $ZP);
          $ROWSTORE
        }
      }
    }
  }
}
#undef TM_STORE
"""
# Stores one tile of accumulators through TM_STORE (inlined into the kernel).
_ROW_INLINE = """for (int i = 0; i < t1 - t0; ++i) {
            const int j = oy * OW + t0 + i;
            ym[j] = TM_STORE(acc[i], j);
          }"""
_CONV_F32 = Template(_CONV_BODY).substitute(
    NAME="conv2d_f32", XT="float", WT="float", BT="float", YT="float", AT="float",
    EXTRA="float lo, float hi", PRE="", TILE="convtile_f32", ZP="0.0f",
    STORE="((a) < lo ? lo : ((a) > hi ? hi : (a)))",
    ROWSTORE=_ROW_INLINE,
)
# Convolution with a residual Add fused in: y = act(conv(x) + r); r may share y's memory.
_CONV_ADD_F32 = Template(_CONV_BODY).substitute(
    NAME="conv2d_add_f32", XT="float", WT="float", BT="float", YT="float", AT="float",
    EXTRA="const float* r, float lo, float hi", TILE="convtile_f32", ZP="0.0f",
    PRE="const float* rm = r + ((size_t)n * M + m) * OH * OW;",
    STORE="tm_clampf((a) + rm[j], lo, hi)",
    ROWSTORE=_ROW_INLINE,
)
_QCONV = Template(_CONV_BODY).safe_substitute(
    NAME="qconv2d_$S", WT="int8_t", BT="int32_t", AT="int32_t",
    EXTRA=("int32_t xz, int32_t yz, const int32_t* mult, const int32_t* shift, "
           "int32_t lo, int32_t hi"),
    PRE="const int32_t mm = mult[m], sm = shift[m];", TILE="convtile_$XC", ZP="xz",
    STORE="(($YT)tm_clampi(tm_mbqm((a), mm, sm) + yz, lo, hi))",
    ROWSTORE=_ROW_INLINE,
)
# Quantized convolution whose int8 result feeds a quantized residual Add (TFLite
# arithmetic for both): the convolution's output tensor is never stored. The requantization
# and the Add of a tile run in a separate, never inlined function: inlined, their 64-bit
# arithmetic and a dozen live parameters crowd the registers of the convolution loop nest,
# and GCC compiled the tap loop (where all the time goes) markedly slower than in the plain
# kernel, which made the fused kernel slower than a convolution plus a separate Add.
_QADD_TILE = r"""
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void tm_qaddtile_$S(const int32_t* acc, int n, $YT* y, const $YT* r, int32_t mm,
                           int32_t sm, int32_t cz, int32_t clo, int32_t chi, int32_t rz,
                           int32_t yz, int32_t ma, int32_t sha, int32_t mb, int32_t shb,
                           int32_t my, int32_t shy, int32_t lo, int32_t hi) {
  /* y may be r (in place): element i is read before it is written. */
  for (int i = 0; i < n; ++i)
    y[i] = ($YT)tm_qadd1(tm_clampi(tm_mbqm(acc[i], mm, sm) + cz, clo, chi) - cz,
                         (int32_t)r[i] - rz, ma, sha, mb, shb, my, shy, yz, lo, hi);
}
"""
_QCONV_ADD = _QADD_TILE + Template(_CONV_BODY).safe_substitute(
    NAME="qconv2d_add_$S", WT="int8_t", BT="int32_t", AT="int32_t",
    EXTRA=("int32_t xz, int32_t cz, const int32_t* mult, const int32_t* shift, "
           "int32_t clo, int32_t chi, const $YT* r, int32_t rz, int32_t yz, int32_t ma, "
           "int32_t sha, int32_t mb, int32_t shb, int32_t my, int32_t shy, int32_t lo, "
           "int32_t hi"),
    PRE=("const int32_t mm = mult[m], sm = shift[m];\n"
         "      const $YT* rm = r + ((size_t)n * M + m) * OH * OW;"),
    TILE="convtile_$XC", ZP="xz", STORE="(a)",
    ROWSTORE=("tm_qaddtile_$S(acc, t1 - t0, ym + oy * OW + t0, rm + oy * OW + t0, mm, sm, "
              "cz, clo, chi,\n                         rz, yz, ma, sha, mb, shb, my, shy, lo, "
              "hi);"),
)

_GEMM_F32 = r"""
/* y[M,N] = alpha * op(a) op(b) + bias; op transposes when ta / tb is set.
   bias_mode: 0 none, 1 one value per column n, 2 a full [M,N] matrix. */
static void tm_gemm_f32(const float* a, const float* b, const float* bias, float* y,
                        int M, int K, int N, int ta, int tb, float alpha, int bias_mode,
                        float lo, float hi) {
  if (!ta && tb) {
    for (int m = 0; m < M; ++m) {
      const float* am = a + (size_t)m * K;
      for (int n = 0; n < N; ++n) {
        const float* bn = b + (size_t)n * K;
        /* Eight partial sums: a fixed summation order the compiler can vectorise. */
        float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        int k = 0;
        for (; k + 8 <= K; k += 8)
          for (int j = 0; j < 8; ++j) part[j] += am[k + j] * bn[k + j];
        float acc = ((part[0] + part[4]) + (part[1] + part[5])) +
                    ((part[2] + part[6]) + (part[3] + part[7]));
        for (; k < K; ++k) acc += am[k] * bn[k];
        acc *= alpha;
        if (bias_mode == 1) acc += bias[n];
        else if (bias_mode == 2) acc += bias[(size_t)m * N + n];
        y[(size_t)m * N + n] = acc < lo ? lo : (acc > hi ? hi : acc);
      }
    }
    return;
  }
  for (int m = 0; m < M; ++m) {
    float* ym = y + (size_t)m * N;
    for (int n = 0; n < N; ++n) ym[n] = 0.0f;
    for (int k = 0; k < K; ++k) {
      const float av = ta ? a[(size_t)k * M + m] : a[(size_t)m * K + k];
      if (tb) {
        for (int n = 0; n < N; ++n) ym[n] += av * b[(size_t)n * K + k];
      } else {
        const float* bk = b + (size_t)k * N;
        for (int n = 0; n < N; ++n) ym[n] += av * bk[n];
      }
    }
    for (int n = 0; n < N; ++n) {
      float acc = ym[n] * alpha;
      if (bias_mode == 1) acc += bias[n];
      else if (bias_mode == 2) acc += bias[(size_t)m * N + n];
      ym[n] = acc < lo ? lo : (acc > hi ? hi : acc);
    }
  }
}
"""

_MATMUL_F32 = r"""
/* Batched y[i] = a[i] @ b[i] with broadcast batch offsets (in elements). */
static void tm_matmul_f32(const float* a, const float* b, float* y, int batches,
                          const int32_t* aoff, const int32_t* boff, int M, int K, int N) {
  for (int i = 0; i < batches; ++i) {
    const float* ai = a + aoff[i];
    const float* bi = b + boff[i];
    float* yi = y + (size_t)i * M * N;
    for (int m = 0; m < M; ++m) {
      float* ym = yi + (size_t)m * N;
      for (int n = 0; n < N; ++n) ym[n] = 0.0f;
      for (int k = 0; k < K; ++k) {
        const float av = ai[(size_t)m * K + k];
        const float* bk = bi + (size_t)k * N;
        for (int n = 0; n < N; ++n) ym[n] += av * bk[n];
      }
    }
  }
}
"""

_QGEMM = r"""
/* Fully connected: y[m,n] = requant(bias[n] + sum_k (a[m,k] - az) * w[n,k]). */
static void tm_qgemm_$S(const $XT* a, const int8_t* w, const int32_t* b, $YT* y,
                        int M, int K, int N, int32_t az, int32_t yz,
                        const int32_t* mult, const int32_t* shift, int32_t lo, int32_t hi) {
  for (int m = 0; m < M; ++m) {
    const $XT* am = a + (size_t)m * K;
    for (int n = 0; n < N; ++n) {
      const int8_t* wn = w + (size_t)n * K;
      int32_t acc = b ? b[n] : 0;
      for (int k = 0; k < K; ++k) acc += ((int32_t)am[k] - az) * wn[k];
      y[(size_t)m * N + n] = ($YT)tm_clampi(tm_mbqm(acc, mult[n], shift[n]) + yz, lo, hi);
    }
  }
}
"""

_MAXPOOL = r"""
static void tm_maxpool_$S(const $XT* x, $XT* y, int P, int H, int W, int OH, int OW,
                          int KH, int KW, int SH, int SW, int PT, int PL, int DH, int DW,
                          $XT lowest) {
  for (int p = 0; p < P; ++p) {
    const $XT* xp = x + (size_t)p * H * W;
    $XT* yp = y + (size_t)p * OH * OW;
    for (int oy = 0; oy < OH; ++oy) {
      const int iy0 = oy * SH - PT;
      const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
      for (int ox = 0; ox < OW; ++ox) {
        const int ix0 = ox * SW - PL;
        const int kx0 = tm_kbegin(ix0, DW), kx1 = tm_kend(ix0, DW, KW, W);
        $XT best = lowest;
        for (int ky = ky0; ky < ky1; ++ky) {
          const $XT* xr = xp + (iy0 + ky * DH) * W + ix0;
          for (int kx = kx0; kx < kx1; ++kx) {
            const $XT v = xr[kx * DW];
            if (v > best) best = v;
          }
        }
        yp[oy * OW + ox] = best;
      }
    }
  }
}
"""

_AVGPOOL_F32 = r"""
static void tm_avgpool_f32(const float* x, float* y, int P, int H, int W, int OH, int OW,
                           int KH, int KW, int SH, int SW, int PT, int PL, int PB, int PR,
                           int DH, int DW, int include_pad) {
  for (int p = 0; p < P; ++p) {
    const float* xp = x + (size_t)p * H * W;
    float* yp = y + (size_t)p * OH * OW;
    for (int oy = 0; oy < OH; ++oy) {
      const int iy0 = oy * SH - PT;
      const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
      const int py = include_pad ? tm_kend(iy0 + PT, DH, KH, H + PT + PB) - tm_kbegin(iy0 + PT, DH)
                                 : ky1 - ky0;
      for (int ox = 0; ox < OW; ++ox) {
        const int ix0 = ox * SW - PL;
        const int kx0 = tm_kbegin(ix0, DW), kx1 = tm_kend(ix0, DW, KW, W);
        const int px = include_pad
            ? tm_kend(ix0 + PL, DW, KW, W + PL + PR) - tm_kbegin(ix0 + PL, DW) : kx1 - kx0;
        float acc = 0.0f;
        for (int ky = ky0; ky < ky1; ++ky) {
          const float* xr = xp + (iy0 + ky * DH) * W + ix0;
          for (int kx = kx0; kx < kx1; ++kx) acc += xr[kx * DW];
        }
        const int count = py * px;
        yp[oy * OW + ox] = count > 0 ? acc / (float)count : 0.0f;
      }
    }
  }
}
"""

_QAVGPOOL = r"""
/* Same scale and zero point in and out, padding not counted: TFLite's rounded integer
   average. Otherwise the average is kept
   with 8 extra bits and requantized with mult/shift (= in_scale / (out_scale * 256)). */
static void tm_qavgpool_$S(const $XT* x, $YT* y, int P, int H, int W, int OH, int OW,
                           int KH, int KW, int SH, int SW, int PT, int PL, int PB, int PR,
                           int DH, int DW, int include_pad, int32_t xz, int32_t yz,
                           int same_scale, int32_t mult, int32_t shift, int32_t lo, int32_t hi) {
  for (int p = 0; p < P; ++p) {
    const $XT* xp = x + (size_t)p * H * W;
    $YT* yp = y + (size_t)p * OH * OW;
    for (int oy = 0; oy < OH; ++oy) {
      const int iy0 = oy * SH - PT;
      const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
      const int py = include_pad ? tm_kend(iy0 + PT, DH, KH, H + PT + PB) - tm_kbegin(iy0 + PT, DH)
                                 : ky1 - ky0;
      for (int ox = 0; ox < OW; ++ox) {
        const int ix0 = ox * SW - PL;
        const int kx0 = tm_kbegin(ix0, DW), kx1 = tm_kend(ix0, DW, KW, W);
        const int px = include_pad
            ? tm_kend(ix0 + PL, DW, KW, W + PL + PR) - tm_kbegin(ix0 + PL, DW) : kx1 - kx0;
        int32_t acc = 0;
        for (int ky = ky0; ky < ky1; ++ky) {
          const $XT* xr = xp + (iy0 + ky * DH) * W + ix0;
          for (int kx = kx0; kx < kx1; ++kx) acc += (int32_t)xr[kx * DW] - xz;
        }
        const int32_t count = py * px > 0 ? py * px : 1;
        int32_t v;
        if (same_scale) {
          /* TFLite: the rounded mean of the raw values (zero points are equal). */
          const int32_t raw = acc + (ky1 - ky0) * (kx1 - kx0) * xz;
          v = (raw > 0 ? (raw + count / 2) / count : (raw - count / 2) / count) - yz;
        } else {
          const int64_t wide = (int64_t)acc * 256;
          const int32_t avg = (int32_t)(wide >= 0 ? (wide + count / 2) / count
                                                  : (wide - count / 2) / count);
          v = tm_mbqm(avg, mult, shift);
        }
        yp[oy * OW + ox] = ($YT)tm_clampi(v + yz, lo, hi);
      }
    }
  }
}
"""

_GAP_F32 = r"""
static void tm_gap_f32(const float* x, float* y, int P, int HW) {
  for (int p = 0; p < P; ++p) {
    const float* xp = x + (size_t)p * HW;
    float acc = 0.0f;
    for (int i = 0; i < HW; ++i) acc += xp[i];
    y[p] = acc / (float)HW;
  }
}
"""

# Mean over the middle axis of an (outer, R, inner) array; reductions over the trailing axes
# (inner = 1) use tm_gap_f32.
_REDUCE_MEAN_F32 = r"""
static void tm_reduce_mean_f32(const float* x, float* y, int O, int R, int I) {
  for (int o = 0; o < O; ++o) {
    const float* xo = x + (size_t)o * R * I;
    float* yo = y + (size_t)o * I;
    for (int i = 0; i < I; ++i) yo[i] = 0.0f;
    for (int r = 0; r < R; ++r) {
      const float* xr = xo + (size_t)r * I;
      for (int i = 0; i < I; ++i) yo[i] += xr[i];
    }
    for (int i = 0; i < I; ++i) yo[i] /= (float)R;
  }
}
"""

_UNARY_F32 = r"""
static void tm_unary_${OP}_f32(const float* x, float* y, int32_t n, float p0, float p1) {
  (void)p0;
  (void)p1;
  for (int32_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = $EXPR;
  }
}
"""

_BINARY = r"""
/* Elementwise with broadcasting: shape is the output shape (rank <= 8, already collapsed),
   sa / sb the element strides of a and b per output dimension (0 where broadcast). */
static void tm_binary_${OP}_$S(const $XT* a, const $XT* b, $XT* y, int rank,
                               const int32_t* shape, const int32_t* sa, const int32_t* sb) {
  int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int32_t inner = shape[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1];
  int32_t outer = 1;
  for (int d = 0; d < rank - 1; ++d) outer *= shape[d];
  for (int32_t o = 0; o < outer; ++o) {
    int32_t oa = 0, ob = 0;
    for (int d = 0; d < rank - 1; ++d) {
      oa += idx[d] * sa[d];
      ob += idx[d] * sb[d];
    }
    const $XT* ap = a + oa;
    const $XT* bp = b + ob;
    if (ia == 1 && ib == 1) {
      for (int32_t i = 0; i < inner; ++i) {
        const $XT u = ap[i], v = bp[i];
        y[i] = $EXPR;
      }
    } else {
      for (int32_t i = 0; i < inner; ++i) {
        const $XT u = ap[i * ia], v = bp[i * ib];
        y[i] = $EXPR;
      }
    }
    y += inner;
    for (int d = rank - 2; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}
"""

_QBINARY = r"""
/* Quantized add / mul with broadcasting (TFLite integer arithmetic). For add: inputs are
   shifted left by 20 bits, rescaled by (ma, sa_) and (mb, sb_) to the common scale and the
   sum requantized by (my, sy); for mul: the product of the offset inputs is requantized. */
static void tm_q${OP}_$S(const $XT* a, const $XT* b, $YT* y, int rank, const int32_t* shape,
                         const int32_t* sa, const int32_t* sb, int32_t az, int32_t bz,
                         int32_t yz, int32_t ma, int32_t sha, int32_t mb, int32_t shb,
                         int32_t my, int32_t shy, int32_t lo, int32_t hi) {
  (void)ma; (void)sha; (void)mb; (void)shb;
  int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int32_t inner = shape[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1];
  int32_t outer = 1;
  for (int d = 0; d < rank - 1; ++d) outer *= shape[d];
  for (int32_t o = 0; o < outer; ++o) {
    int32_t oa = 0, ob = 0;
    for (int d = 0; d < rank - 1; ++d) {
      oa += idx[d] * sa[d];
      ob += idx[d] * sb[d];
    }
    for (int32_t i = 0; i < inner; ++i) {
      const int32_t u = (int32_t)a[oa + i * ia] - az;
      const int32_t v = (int32_t)b[ob + i * ib] - bz;
      int32_t r;
      $EXPR
      y[i] = ($YT)tm_clampi(r + yz, lo, hi);
    }
    y += inner;
    for (int d = rank - 2; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}
"""
_QADD_EXPR = (
    "r = tm_mbqm(tm_mbqm(u * (1 << 20), ma, sha) + tm_mbqm(v * (1 << 20), mb, shb), my, shy);"
)
_QMUL_EXPR = "r = tm_mbqm(u * v, my, shy);"

_CLIP_RUNTIME = r"""
/* Clip with bounds read at run time (NULL: unbounded on that side). */
static void tm_cliprt_$S(const $XT* x, const $XT* lo, const $XT* hi, $XT* y, int32_t n) {
  for (int32_t i = 0; i < n; ++i) {
    $XT v = x[i];
    if (lo && v < *lo) v = *lo;
    if (hi && v > *hi) v = *hi;
    y[i] = v;
  }
}
"""

_CLAMP = r"""
static void tm_clamp_$S(const $XT* x, $XT* y, int32_t n, int32_t lo, int32_t hi) {
  for (int32_t i = 0; i < n; ++i) y[i] = ($XT)tm_clampi((int32_t)x[i], lo, hi);
}
"""

_LUT = r"""
static void tm_lut_$S(const $XT* x, $YT* y, int32_t n, const $YT* table) {
  for (int32_t i = 0; i < n; ++i) y[i] = table[(int32_t)x[i] + $OFF];
}
"""

_SOFTMAX_F32 = r"""
static void tm_softmax_f32(const float* x, float* y, int32_t outer, int32_t n, int32_t inner) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t i = 0; i < inner; ++i) {
      const float* xp = x + (size_t)o * n * inner + i;
      float* yp = y + (size_t)o * n * inner + i;
      float mx = xp[0];
      for (int32_t j = 1; j < n; ++j) if (xp[j * inner] > mx) mx = xp[j * inner];
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) {
        const float e = expf(xp[j * inner] - mx);
        yp[j * inner] = e;
        sum += e;
      }
      const float inv = 1.0f / sum;
      for (int32_t j = 0; j < n; ++j) yp[j * inner] *= inv;
    }
  }
}
"""

_QSOFTMAX = r"""
/* table[d] = exp(-in_scale * d) for d = 0..255, computed by the compiler. */
static void tm_qsoftmax_$S(const $XT* x, $YT* y, int32_t outer, int32_t n, int32_t inner,
                           const float* table, float ys, int32_t yz, int32_t lo, int32_t hi) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t i = 0; i < inner; ++i) {
      const $XT* xp = x + (size_t)o * n * inner + i;
      $YT* yp = y + (size_t)o * n * inner + i;
      int32_t mx = xp[0];
      for (int32_t j = 1; j < n; ++j) if (xp[j * inner] > mx) mx = xp[j * inner];
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) sum += table[mx - (int32_t)xp[j * inner]];
      const float inv = 1.0f / sum;
      for (int32_t j = 0; j < n; ++j) {
        const float p = table[mx - (int32_t)xp[j * inner]] * inv;
        yp[j * inner] = ($YT)tm_clampi((int32_t)rintf(p / ys) + yz, lo, hi);
      }
    }
  }
}
"""

_QSOFTMAX_TFL = r"""
/* gemmlowp fixed point, as TFLite's integer softmax uses it (int32 raw values). */
static int32_t tm_sat_shl(int32_t x, int e) {
  const int32_t thr = (int32_t)(((int64_t)1 << (31 - e)) - 1);
  if (x > thr) return INT32_MAX;
  if (x < -thr) return INT32_MIN;
  return (int32_t)((uint32_t)x << e);
}

/* exp(x) for x in [-1/4, 0), Q0.31 in and out. */
static int32_t tm_exp_quarter(int32_t a) {
  const int32_t c = 1895147668, third = 715827883;
  const int32_t x = a + (1 << 28);
  const int32_t x2 = tm_srdhm(x, x), x3 = tm_srdhm(x2, x), x4 = tm_srdhm(x2, x2);
  const int32_t t = tm_rdbpot(tm_srdhm(tm_rdbpot(x4, 2) + x3, third) + x2, 1);
  return c + tm_srdhm(c, x + t);
}

/* exp(a) for a <= 0 in Q5.26; the result in Q0.31. */
static int32_t tm_exp_neg(int32_t a) {
  static const int32_t mult[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535,
                                  720401, 242};
  const int32_t quarter = 1 << 24;
  const int32_t mod = (a & (quarter - 1)) - quarter;
  int32_t result = tm_exp_quarter(tm_sat_shl(mod, 5));
  const int32_t rem = mod - a;
  for (int k = 0; k < 7; ++k)
    if (rem & (1 << (24 + k))) result = tm_srdhm(result, mult[k]);
  return a == 0 ? INT32_MAX : result;
}

/* 1 / (1 + x) for x in [0, 1) in Q0.31 (Newton-Raphson); the result in Q0.31. */
static int32_t tm_one_over_one_plus(int32_t a) {
  const int64_t sum = (int64_t)a + INT32_MAX;
  const int32_t half = (int32_t)((sum + (sum >= 0 ? 1 : -1)) / 2);
  int32_t x = 1515870810 + tm_srdhm(half, -1010580540);
  for (int i = 0; i < 3; ++i) {
    const int32_t one_minus = (1 << 29) - tm_srdhm(half, x);
    x = x + tm_sat_shl(tm_srdhm(x, one_minus), 2);
  }
  return tm_sat_shl(x, 1);
}

/* TFLite's int8/uint8 softmax (reference_ops::Softmax): output scale 1/256, zero point at
   the type's minimum; mult/shift: beta * input scale * 2^26 as a Q31 multiplier. */
static void tm_qsoftmax_tfl_$S(const $XT* x, $YT* y, int32_t outer, int32_t n, int32_t inner,
                               int32_t mult, int32_t shift, int32_t diff_min, int32_t ymin,
                               int32_t ymax) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t i = 0; i < inner; ++i) {
      const $XT* xp = x + (size_t)o * n * inner + i;
      $YT* yp = y + (size_t)o * n * inner + i;
      int32_t mx = xp[0];
      for (int32_t j = 1; j < n; ++j) if (xp[j * inner] > mx) mx = xp[j * inner];
      int32_t sum = 0;
      for (int32_t j = 0; j < n; ++j) {
        const int32_t d = (int32_t)xp[j * inner] - mx;
        if (d >= diff_min) sum += tm_rdbpot(tm_exp_neg(tm_srdhm(d * (1 << shift), mult)), 12);
      }
      int headroom = 0;
      while (headroom < 32 && !((uint32_t)sum & (0x80000000u >> headroom))) ++headroom;
      const int over = 12 - headroom;
      const int32_t scale = tm_one_over_one_plus(
          (int32_t)(((uint32_t)sum << headroom) - 0x80000000u));
      for (int32_t j = 0; j < n; ++j) {
        const int32_t d = (int32_t)xp[j * inner] - mx;
        int32_t v = ymin;
        if (d >= diff_min) {
          const int32_t e = tm_exp_neg(tm_srdhm(d * (1 << shift), mult));
          v = tm_clampi(tm_rdbpot(tm_srdhm(scale, e), over + 31 - 8) + ymin, ymin, ymax);
        }
        yp[j * inner] = ($YT)v;
      }
    }
  }
}
"""

_QUANTIZE = r"""
/* ONNX QuantizeLinear along one axis: x[outer, C, inner]; round half to even, saturate. */
static void tm_quantize_$S(const float* x, $YT* y, int32_t outer, int32_t C, int32_t inner,
                           const float* scale, const $YT* zp) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t c = 0; c < C; ++c) {
      const float s = scale[c];
      const float z = (float)zp[c];
      const size_t base = ((size_t)o * C + c) * inner;
      for (int32_t i = 0; i < inner; ++i) {
        float v = rintf(x[base + i] / s) + z;
        v = v < $LO.0f ? $LO.0f : (v > $HI.0f ? $HI.0f : v);
        y[base + i] = ($YT)v;
      }
    }
  }
}
"""

_DEQUANTIZE = r"""
/* ONNX DequantizeLinear along one axis: x[outer, C, inner]. */
static void tm_dequantize_$S(const $XT* x, float* y, int32_t outer, int32_t C, int32_t inner,
                             const float* scale, const $XT* zp) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t c = 0; c < C; ++c) {
      const float s = scale[c];
      const float z = (float)zp[c];
      const size_t base = ((size_t)o * C + c) * inner;
      for (int32_t i = 0; i < inner; ++i) y[base + i] = ((float)x[base + i] - z) * s;
    }
  }
}
"""

_REQUANT = r"""
static void tm_requant_$S(const $XT* x, $YT* y, int32_t n, int32_t xz, int32_t yz,
                          int32_t mult, int32_t shift, int32_t lo, int32_t hi) {
  for (int32_t i = 0; i < n; ++i)
    y[i] = ($YT)tm_clampi(tm_mbqm((int32_t)x[i] - xz, mult, shift) + yz, lo, hi);
}
"""

_TRANSPOSE = r"""
/* y (shape oshape) gets x read with stride istride[d] along output dimension d. */
static void tm_transpose_$S(const $XT* x, $XT* y, int rank, const int32_t* oshape,
                            const int32_t* istride) {
  int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int32_t total = 1;
  for (int d = 0; d < rank; ++d) total *= oshape[d];
  size_t off = 0;
  for (int32_t i = 0; i < total; ++i) {
    y[i] = x[off];
    for (int d = rank - 1; d >= 0; --d) {
      off += istride[d];
      if (++idx[d] < oshape[d]) break;
      off -= (size_t)istride[d] * oshape[d];
      idx[d] = 0;
    }
  }
}
"""

_REMAP = r"""
/* y[o] = x[sum_d maps_d[o_d] * istride[d]], or fill[0] where some maps_d[o_d] < 0. The rank
   tables maps_d (oshape[d] entries each) lie back to back in maps. */
static void tm_remap_$S(const $XT* x, $XT* y, int rank, const int32_t* oshape,
                        const int32_t* istride, const int32_t* maps, const $XT* fill) {
  int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int32_t* table[8];
  int32_t total = 1;
  const int32_t* m = maps;
  for (int d = 0; d < rank; ++d) {
    table[d] = m;
    m += oshape[d];
    total *= oshape[d];
  }
  for (int32_t i = 0; i < total; ++i) {
    size_t off = 0;
    int inside = 1;
    for (int d = 0; d < rank; ++d) {
      const int32_t k = table[d][idx[d]];
      if (k < 0) {
        inside = 0;
        break;
      }
      off += (size_t)k * (size_t)istride[d];
    }
    y[i] = inside ? x[off] : fill[0];
    for (int d = rank - 1; d >= 0; --d) {
      if (++idx[d] < oshape[d]) break;
      idx[d] = 0;
    }
  }
}
"""

_COPY2D = r"""
static void tm_copy2d(void* dst, const void* src, int32_t rows, int32_t row_bytes,
                      int32_t dst_stride, int32_t src_stride) {
  for (int32_t r = 0; r < rows; ++r)
    memcpy((uint8_t*)dst + (size_t)r * dst_stride, (const uint8_t*)src + (size_t)r * src_stride,
           (size_t)row_bytes);
}
"""

_BATCHNORM_F32 = r"""
static void tm_batchnorm_f32(const float* x, const float* scale, const float* bias,
                             const float* mean, const float* var, float* y, int N, int C,
                             int inner, float eps) {
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < C; ++c) {
      const float a = scale[c] / sqrtf(var[c] + eps);
      const float b = bias[c] - mean[c] * a;
      const size_t base = ((size_t)n * C + c) * inner;
      for (int i = 0; i < inner; ++i) y[base + i] = x[base + i] * a + b;
    }
  }
}
"""

#: Unary float operators: C expression of ``v`` (and parameters ``p0``, ``p1``).
UNARY_EXPR: dict[str, str] = {
    "relu": "v > 0.0f ? v : 0.0f",
    "clip": "v < p0 ? p0 : (v > p1 ? p1 : v)",
    "sigmoid": "1.0f / (1.0f + expf(-v))",
    "tanh": "tanhf(v)",
    "leakyrelu": "v >= 0.0f ? v : v * p0",
    "exp": "expf(v)",
    "log": "logf(v)",
    "sqrt": "sqrtf(v)",
    "abs": "fabsf(v)",
    "neg": "-v",
    "reciprocal": "1.0f / v",
    "floor": "floorf(v)",
    "ceil": "ceilf(v)",
    "erf": "erff(v)",
    "hardsigmoid": "fmaxf(0.0f, fminf(1.0f, p0 * v + p1))",
    "hardswish": "v * fmaxf(0.0f, fminf(1.0f, v / 6.0f + 0.5f))",
    "elu": "v >= 0.0f ? v : p0 * (expf(v) - 1.0f)",
    "softplus": "v > 20.0f ? v : log1pf(expf(v))",
    "softsign": "v / (1.0f + fabsf(v))",
}
#: Binary operators: C expression of ``u`` (left) and ``v`` (right).
BINARY_EXPR: dict[str, str] = {
    "add": "u + v",
    "sub": "u - v",
    "mul": "u * v",
    "div": "u / v",
    "max": "u > v ? u : v",
    "min": "u < v ? u : v",
}

_FIXED: dict[str, str] = {
    "tm_conv2d_f32": _CONV_F32,
    "tm_conv2d_add_f32": _CONV_ADD_F32,
    "tm_convtile_f32": Template(_CONV_TILE).substitute(
        TILE="convtile_f32", XT="float", WT="float", AT="float").replace(" - xz)", ")"),
    "tm_gemm_f32": _GEMM_F32,
    "tm_matmul_f32": _MATMUL_F32,
    "tm_avgpool_f32": _AVGPOOL_F32,
    "tm_gap_f32": _GAP_F32,
    "tm_reduce_mean_f32": _REDUCE_MEAN_F32,
    "tm_softmax_f32": _SOFTMAX_F32,
    "tm_copy2d": _COPY2D,
    "tm_batchnorm_f32": _BATCHNORM_F32,
}
# Templated kernels: base name -> (template, number of type parameters).
_TEMPLATES: dict[str, tuple[str, int]] = {
    "qconv2d": (_QCONV, 2),
    "convtile": (_CONV_TILE, 1),
    "qconv2d_add": (_QCONV_ADD, 2),
    "qgemm": (_QGEMM, 2),
    "maxpool": (_MAXPOOL, 1),
    "qavgpool": (_QAVGPOOL, 2),
    "clamp": (_CLAMP, 1),
    "cliprt": (_CLIP_RUNTIME, 1),
    "lut": (_LUT, 2),
    "qsoftmax": (_QSOFTMAX, 2),
    "qsoftmax_tfl": (_QSOFTMAX_TFL, 2),
    "quantize": (_QUANTIZE, 1),
    "dequantize": (_DEQUANTIZE, 1),
    "requant": (_REQUANT, 2),
    "transpose": (_TRANSPOSE, 1),
    "remap": (_REMAP, 1),
    "qadd": (_QBINARY, 2),
    "qmul": (_QBINARY, 2),
}
_TYPE_CODE = re.compile(r"f32|s8|u8|s16|u16|s32|s64|b8|b16|b32|b64")


def split_func(func: str) -> tuple[str, list[str]]:
    """Split ``tm_qconv2d_s8s8`` into ``("qconv2d", ["s8", "s8"])``."""
    body = func.removeprefix("tm_")
    base, _, suffix = body.rpartition("_")
    return base, _TYPE_CODE.findall(suffix)


def kernel_dependencies(func: str) -> list[str]:
    """Kernels that ``func`` calls, which must be defined before it."""
    base, types = split_func(func)
    if base in ("conv2d", "conv2d_add"):
        return ["tm_convtile_f32"]
    if base in ("qconv2d", "qconv2d_add"):
        return [f"tm_convtile_{types[0]}"]
    return []


def kernel_source(func: str) -> str:
    """The C source of one kernel function, instantiated for its types.

    Args:
        func: A kernel name as used by the generated code, e.g. ``tm_binary_add_f32``.

    Returns:
        C source text defining ``func``.

    Raises:
        KeyError: The kernel library has no such kernel.
    """
    if func in _FIXED:
        return _FIXED[func]
    base, types = split_func(func)
    suffix = "".join(types)
    if base.startswith("unary_"):
        op = base.removeprefix("unary_")
        return Template(_UNARY_F32).substitute(OP=op, EXPR=UNARY_EXPR[op])
    if base.startswith("binary_"):
        op = base.removeprefix("binary_")
        return Template(_BINARY).substitute(
            OP=op, S=suffix, XT=C_TYPES[types[0]], EXPR=BINARY_EXPR[op]
        )
    template, arity = _TEMPLATES[base]
    if len(types) != arity:
        raise KeyError(func)
    xt = C_TYPES[types[0]]
    yt = C_TYPES[types[-1]]
    values = {
        "XC": types[0],
        "TILE": f"convtile_{types[0]}",
        "WT": "int8_t",
        "AT": "int32_t",
        "S": suffix,
        "XT": xt,
        "YT": yt,
        "OFF": "128" if types[0] == "s8" else "0",
        "OP": base.removeprefix("q"),
        "EXPR": _QADD_EXPR if base == "qadd" else _QMUL_EXPR,
    }
    if base == "quantize":
        values["YT"] = xt
        low, high = _RANGES[types[0]]
        values["LO"], values["HI"] = str(low), str(high)
    text = Template(template).substitute(values)
    if base == "convtile":
        # Integer taps: |x - xz| <= 255 and |w| <= 128, so every product fits int16 exactly
        # (|p| <= 32640); 16-bit multiplies vectorise to twice the lanes of 32-bit ones
        # (and SSE2 has no 32-bit lane multiply). Bit-exact: the sum stays int32.
        text = text.replace("const int32_t wv = (int32_t)wr[kx];",
                            "const int16_t wv = (int16_t)wr[kx];")
        for index in ("ox + off", "ox * SW + off"):
            text = text.replace(f"wv * (int32_t)(xr[{index}] - xz)",
                                f"(int16_t)(wv * (int16_t)(xr[{index}] - xz))")
    return text
