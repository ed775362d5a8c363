/* Quantized add / mul with broadcasting (TFLite integer arithmetic). For add: inputs are
   shifted left by 20 bits, rescaled by (ma, sa_) and (mb, sb_) to the common scale and the
   sum requantized by (my, sy); for mul: the product of the offset inputs is requantized. */
static void tm_qTMPL_OP_TMPL_S(const TMPL_XT* a, const TMPL_XT* b, TMPL_YT* y, int rank, const int32_t* shape,
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
      TMPL_EXPR
      y[i] = (TMPL_YT)tm_clampi(r + yz, lo, hi);
    }
    y += inner;
    for (int d = rank - 2; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}
