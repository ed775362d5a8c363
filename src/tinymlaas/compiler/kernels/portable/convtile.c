/* Accumulate one tile [t0, t1) of an output row: every (channel, ky, kx) tap adds a weight
   times a contiguous input run (for stride 1), so the inner loop is long and vectorises;
   padding is skipped, never read. Shared by the plain and the fused kernels. */
static void tm_convtile_TMPL_XC(const TMPL_XT* xg, const int8_t* wm, int32_t* acc, int32_t bias, int cg, int H,
                       int W, int KH, int KW, int SW, int DH, int DW, int PL, int iy0,
                       int ky0, int ky1, int t0, int t1, int32_t xz) {
  (void)xz;
  for (int i = 0; i < t1 - t0; ++i) acc[i] = bias;
  for (int c = 0; c < cg; ++c) {
    const TMPL_XT* xc = xg + (size_t)c * H * W;
    const int8_t* wc = wm + c * KH * KW;
    for (int ky = ky0; ky < ky1; ++ky) {
      const TMPL_XT* xr = xc + (iy0 + ky * DH) * W;
      const int8_t* wr = wc + ky * KW;
      for (int kx = 0; kx < KW; ++kx) {
        const int16_t wv = (int16_t)wr[kx];
        const int off = kx * DW - PL;
        int lo = t0, hi = t1;
        if (W - 1 - off < 0) continue;
        if (off < 0 && lo < (-off + SW - 1) / SW) lo = (-off + SW - 1) / SW;
        if (hi > (W - 1 - off) / SW + 1) hi = (W - 1 - off) / SW + 1;
        if (SW == 1) {
          for (int ox = lo; ox < hi; ++ox) acc[ox - t0] += (int16_t)(wv * (int16_t)(xr[ox + off] - xz));
        } else {
          for (int ox = lo; ox < hi; ++ox) acc[ox - t0] += (int16_t)(wv * (int16_t)(xr[ox * SW + off] - xz));
        }
      }
    }
  }
}
