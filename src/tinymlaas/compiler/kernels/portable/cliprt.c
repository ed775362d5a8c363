/* Clip with bounds read at run time (NULL: unbounded on that side). */
static void tm_cliprt_TMPL_S(const TMPL_XT* x, const TMPL_XT* lo, const TMPL_XT* hi, TMPL_XT* y, int32_t n) {
  for (int32_t i = 0; i < n; ++i) {
    TMPL_XT v = x[i];
    if (lo && v < *lo) v = *lo;
    if (hi && v > *hi) v = *hi;
    y[i] = v;
  }
}
