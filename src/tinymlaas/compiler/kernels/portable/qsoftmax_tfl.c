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
static void tm_qsoftmax_tfl_TMPL_S(const TMPL_XT* x, TMPL_YT* y, int32_t outer, int32_t n, int32_t inner,
                               int32_t mult, int32_t shift, int32_t diff_min, int32_t ymin,
                               int32_t ymax) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t i = 0; i < inner; ++i) {
      const TMPL_XT* xp = x + (size_t)o * n * inner + i;
      TMPL_YT* yp = y + (size_t)o * n * inner + i;
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
        yp[j * inner] = (TMPL_YT)v;
      }
    }
  }
}
