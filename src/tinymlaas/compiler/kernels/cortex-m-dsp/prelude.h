/* Cortex-M DSP kernels (Armv7E-M and Armv8-M DSP extension: SMLAD, SXTB16, SXTAB16 through
   the ACLE intrinsics of arm_acle.h). TM_DSP is 1 where the compiler targets such a core and
   0 elsewhere, where the portable twin of each kernel is compiled instead; define it to 0
   to force the portable kernels. */
#ifndef TM_DSP
#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)
#define TM_DSP 1
#else
#define TM_DSP 0
#endif
#endif

#if TM_DSP
#include <arm_acle.h>

/* The innermost multiply-accumulate loops: a function of their own (few live values), and
   with GCC optimised for speed even in -Os builds, whose register allocation spills the
   sums of these loops to the stack. */
#if defined(__GNUC__) && !defined(__clang__)
#define TM_HOT __attribute__((noinline, optimize("O2")))
#elif defined(__GNUC__)
#define TM_HOT __attribute__((noinline))
#else
#define TM_HOT
#endif

/* Four bytes from any address (LDR accepts unaligned addresses on these cores). */
TM_INLINE uint32_t tm_ld32(const void* p) {
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}

/* GCC builds PKHBT/PKHTB and SXTAB16's rotation out of two or three instructions; these
   say them in one (plain asm, so the compiler still schedules and merges them). */

/* (x - z) for bytes 0 and 2 (tm_xtab16_*) or 1 and 3 (tm_xtab16r_*) of v as two 16-bit
   lanes, z being the zero point in both lanes: SXTAB16 for int8 inputs, UXTAB16 for uint8
   (x - z fits 16 bits either way). */
TM_INLINE int32_t tm_xtab16_s8(uint32_t z, uint32_t v) { return __sxtab16(z, v); }
TM_INLINE int32_t tm_xtab16_u8(uint32_t z, uint32_t v) { return (int32_t)__uxtab16(z, v); }
TM_INLINE int32_t tm_xtab16r_s8(uint32_t z, uint32_t v) {
  int32_t r;
  __asm("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(z), "r"(v));
  return r;
}
TM_INLINE int32_t tm_xtab16r_u8(uint32_t z, uint32_t v) {
  int32_t r;
  __asm("uxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(z), "r"(v));
  return r;
}

/* Bytes 1 and 3 of v, sign-extended, as two 16-bit lanes: SXTB16 with ROR #8. */
TM_INLINE int32_t tm_sxtb16_ror8(uint32_t v) {
  int32_t r;
  __asm("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
  return r;
}

/* Two 16-bit lanes: lo's low half below, hi's low half above (PKHBT ..., LSL #16). */
TM_INLINE uint32_t tm_pack16(int32_t lo, int32_t hi) {
  uint32_t r;
  __asm("pkhbt %0, %1, %2, lsl #16" : "=r"(r) : "r"(lo), "r"(hi));
  return r;
}

/* Two 16-bit lanes: lo's low half below, hi's high half above (PKHBT). */
TM_INLINE uint32_t tm_packlh(int32_t lo, int32_t hi) {
  uint32_t r;
  __asm("pkhbt %0, %1, %2" : "=r"(r) : "r"(lo), "r"(hi));
  return r;
}

/* Two 16-bit lanes: lo's high half below, hi's high half above (PKHTB ..., ASR #16). */
TM_INLINE uint32_t tm_packhi(int32_t lo, int32_t hi) {
  uint32_t r;
  __asm("pkhtb %0, %2, %1, asr #16" : "=r"(r) : "r"(lo), "r"(hi));
  return r;
}

/* Outputs [lo, hi) of the row tile [t0, t1) whose tap at input offset off (stride SW) lies
   inside a row of W inputs; 0 (and an empty range) when none does. */
TM_INLINE int tm_taprange(int off, int W, int SW, int t0, int t1, int* lo, int* hi) {
  *lo = t0;
  *hi = t0;
  if (W - 1 - off < 0) return 0;
  int a = t0, b = t1;
  if (off < 0 && a < (-off + SW - 1) / SW) a = (-off + SW - 1) / SW;
  if (b > (W - 1 - off) / SW + 1) b = (W - 1 - off) / SW + 1;
  if (b <= a) return 0;
  *lo = a;
  *hi = b;
  return 1;
}
#endif
