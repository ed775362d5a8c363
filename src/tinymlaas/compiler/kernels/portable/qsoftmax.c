/* table[d] = exp(-in_scale * d) for d = 0..255, computed by the compiler. */
static void tm_qsoftmax_TMPL_S(const TMPL_XT* x, TMPL_YT* y, int32_t outer, int32_t n, int32_t inner,
                           const float* table, float ys, int32_t yz, int32_t lo, int32_t hi) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t i = 0; i < inner; ++i) {
      const TMPL_XT* xp = x + (size_t)o * n * inner + i;
      TMPL_YT* yp = y + (size_t)o * n * inner + i;
      int32_t mx = xp[0];
      for (int32_t j = 1; j < n; ++j) if (xp[j * inner] > mx) mx = xp[j * inner];
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) sum += table[mx - (int32_t)xp[j * inner]];
      const float inv = 1.0f / sum;
      for (int32_t j = 0; j < n; ++j) {
        const float p = table[mx - (int32_t)xp[j * inner]] * inv;
        yp[j * inner] = (TMPL_YT)tm_clampi((int32_t)rintf(p / ys) + yz, lo, hi);
      }
    }
  }
}
