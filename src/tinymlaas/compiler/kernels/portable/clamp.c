static void tm_clamp_TMPL_S(const TMPL_XT* x, TMPL_XT* y, int32_t n, int32_t lo, int32_t hi) {
  for (int32_t i = 0; i < n; ++i) y[i] = (TMPL_XT)tm_clampi((int32_t)x[i], lo, hi);
}
