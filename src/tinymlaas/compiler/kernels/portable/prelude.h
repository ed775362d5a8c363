#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Loop vectorisation pays off in the kernels; keep it even in -O2 builds, but not when
   optimising for size (microcontroller builds use -Os). */
#if defined(__GNUC__) && !defined(__clang__) && !defined(__OPTIMIZE_SIZE__)
#pragma GCC optimize("O3")
#endif

/* Helpers that only some kernels of a source call. */
#if defined(__GNUC__)
#define TM_UNUSED __attribute__((unused))
#else
#define TM_UNUSED
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

/* The most taps (input channels x kernel height x width) of a convolution window that the
   column (im2col) kernels take; larger windows use the row tiles. */
#ifndef TM_COLMAX
#define TM_COLMAX 640
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
