static void tm_lut_TMPL_S(const TMPL_XT* x, TMPL_YT* y, int32_t n, const TMPL_YT* table) {
  for (int32_t i = 0; i < n; ++i) y[i] = table[(int32_t)x[i] + TMPL_OFF];
}
