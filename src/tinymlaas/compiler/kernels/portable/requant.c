static void tm_requant_TMPL_S(const TMPL_XT* x, TMPL_YT* y, int32_t n, int32_t xz, int32_t yz,
                          int32_t mult, int32_t shift, int32_t lo, int32_t hi) {
  for (int32_t i = 0; i < n; ++i)
    y[i] = (TMPL_YT)tm_clampi(tm_mbqm((int32_t)x[i] - xz, mult, shift) + yz, lo, hi);
}
