/* Fully connected on the DSP extension: y[m,n] = requant(bias[n] + sum_k (a[m,k] - az) *
   w[n,k]). Four products per step and two outputs at a time: SXTAB16 (UXTAB16 for uint8)
   unpacks bytes 0/2 and 1/3 of the inputs minus the zero point, SXTB16 those of the
   weights, and two SMLADs add them to each sum. The same integer sums as the portable
   kernel: bit-identical results. */
/* acc[0] and acc[1] += the products of the inputs a (minus the zero point, in both lanes
   of naz negated) with the weight rows w0 and w1 over 4 * n4 taps. */
TM_HOT
static void tm_gemmdot2_TMPL_S(const TMPL_XT* a, const int8_t* w0, const int8_t* w1, int n4,
                                uint32_t naz, int32_t* acc) {
  int32_t acc0 = acc[0], acc1 = acc[1];
  const int8_t* const e0 = w0 + 4 * n4;
  while (w0 != e0) {
    const uint32_t va = tm_ld32(a), v0 = tm_ld32(w0), v1 = tm_ld32(w1);
    a += 4;
    w0 += 4;
    w1 += 4;
    const int32_t a02 = tm_xtab16_TMPL_XC(naz, va), a13 = tm_xtab16r_TMPL_XC(naz, va);
    acc0 = __smlad(a02, __sxtb16(v0), acc0);
    acc0 = __smlad(a13, tm_sxtb16_ror8(v0), acc0);
    acc1 = __smlad(a02, __sxtb16(v1), acc1);
    acc1 = __smlad(a13, tm_sxtb16_ror8(v1), acc1);
  }
  acc[0] = acc0;
  acc[1] = acc1;
}

static void tm_qgemm_TMPL_S(const TMPL_XT* a, const int8_t* w, const int32_t* b, TMPL_YT* y,
                        int M, int K, int N, int32_t az, int32_t yz,
                        const int32_t* mult, const int32_t* shift, int32_t lo, int32_t hi) {
  const uint32_t naz = tm_pack16(-az, -az);
  for (int m = 0; m < M; ++m) {
    const TMPL_XT* am = a + (size_t)m * K;
    TMPL_YT* ym = y + (size_t)m * N;
    int n = 0;
    for (; n + 2 <= N; n += 2) {
      const int8_t* w0 = w + (size_t)n * K;
      const int8_t* w1 = w0 + K;
      int32_t acc0 = b ? b[n] : 0, acc1 = b ? b[n + 1] : 0;
      int32_t acc[2] = {acc0, acc1};
      tm_gemmdot2_TMPL_S(am, w0, w1, K >> 2, naz, acc);
      acc0 = acc[0];
      acc1 = acc[1];
      int k = K & ~3;
      for (; k < K; ++k) {
        const int32_t v = (int32_t)am[k] - az;
        acc0 += v * w0[k];
        acc1 += v * w1[k];
      }
      ym[n] = (TMPL_YT)tm_clampi(tm_mbqm(acc0, mult[n], shift[n]) + yz, lo, hi);
      ym[n + 1] = (TMPL_YT)tm_clampi(tm_mbqm(acc1, mult[n + 1], shift[n + 1]) + yz, lo, hi);
    }
    for (; n < N; ++n) {
      const int8_t* wn = w + (size_t)n * K;
      int32_t acc = b ? b[n] : 0;
      int k = 0;
      for (; k + 4 <= K; k += 4) {
        const uint32_t va = tm_ld32(am + k), vw = tm_ld32(wn + k);
        acc = __smlad(tm_xtab16_TMPL_XC(naz, va), __sxtb16(vw), acc);
        acc = __smlad(tm_xtab16r_TMPL_XC(naz, va), tm_sxtb16_ror8(vw), acc);
      }
      for (; k < K; ++k) acc += ((int32_t)am[k] - az) * wn[k];
      ym[n] = (TMPL_YT)tm_clampi(tm_mbqm(acc, mult[n], shift[n]) + yz, lo, hi);
    }
  }
}
