/* Accumulate one tile [t0, t1) of an output row: every (channel, ky, kx) tap adds a weight
   times a contiguous input run (for stride 1), so the inner loop is long and vectorises;
   padding is skipped, never read. Shared by the plain and the fused kernels. */
static void tm_convtile_f32(const float* xg, const float* wm, float* acc, float bias, int cg, int H,
                       int W, int KH, int KW, int SW, int DH, int DW, int PL, int iy0,
                       int ky0, int ky1, int t0, int t1, float xz) {
  (void)xz;
  for (int i = 0; i < t1 - t0; ++i) acc[i] = bias;
  for (int c = 0; c < cg; ++c) {
    const float* xc = xg + (size_t)c * H * W;
    const float* wc = wm + c * KH * KW;
    for (int ky = ky0; ky < ky1; ++ky) {
      const float* xr = xc + (iy0 + ky * DH) * W;
      const float* wr = wc + ky * KW;
      for (int kx = 0; kx < KW; ++kx) {
        const float wv = (float)wr[kx];
        const int off = kx * DW - PL;
        int lo = t0, hi = t1;
        if (W - 1 - off < 0) continue;
        if (off < 0 && lo < (-off + SW - 1) / SW) lo = (-off + SW - 1) / SW;
        if (hi > (W - 1 - off) / SW + 1) hi = (W - 1 - off) / SW + 1;
        if (SW == 1) {
          for (int ox = lo; ox < hi; ++ox) acc[ox - t0] += wv * (float)(xr[ox + off]);
        } else {
          for (int ox = lo; ox < hi; ++ox) acc[ox - t0] += wv * (float)(xr[ox * SW + off]);
        }
      }
    }
  }
}
