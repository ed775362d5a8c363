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

#if !defined(__OPTIMIZE_SIZE__)
/* Convolutions that reuse each input window for several output channels, in builds
   optimised for speed (the host), go through columns (im2col): the window of one output
   pixel as (x - xz) in 16 bits, in the weights' (c, ky, kx) order, 0 for padding (which adds
   nothing, as where it is skipped). Each output channel's sum is then one long dot product
   of contiguous int8 weights and int16 values, which GCC vectorises; four channels share
   each column load. At most TM_COLMAX taps (2 * TM_COLMAX bytes on the stack). */
TM_UNUSED static void tm_column_TMPL_XC(const TMPL_XT* xg, int16_t* col, int cg, int H, int W, int KH,
                              int KW, int DH, int DW, int iy0, int ix0, int32_t xz) {
  const int inside = iy0 >= 0 && iy0 + (KH - 1) * DH < H && ix0 >= 0 &&
                     ix0 + (KW - 1) * DW < W;
  int k = 0;
  for (int c = 0; c < cg; ++c) {
    const TMPL_XT* xc = xg + (size_t)c * H * W;
    for (int ky = 0; ky < KH; ++ky) {
      const int iy = iy0 + ky * DH;
      const int rowin = iy >= 0 && iy < H;
      const TMPL_XT* xr = xc + (rowin ? iy : 0) * W;
      if (inside && DW == 1) {
        for (int kx = 0; kx < KW; ++kx) col[k + kx] = (int16_t)((int32_t)xr[ix0 + kx] - xz);
        k += KW;
        continue;
      }
      for (int kx = 0; kx < KW; ++kx, ++k) {
        const int ix = ix0 + kx * DW;
        col[k] = (inside || (rowin && ix >= 0 && ix < W)) ? (int16_t)((int32_t)xr[ix] - xz)
                                                          : (int16_t)0;
      }
    }
  }
}

/* s[i] += the dot product of the column c with weight row w + i * K, for i < 4. */
TM_UNUSED static void tm_coldot4_TMPL_XC(const int16_t* restrict c, const int8_t* restrict w, int K,
                               int32_t* restrict s) {
  const int8_t* restrict w0 = w;
  const int8_t* restrict w1 = w + K;
  const int8_t* restrict w2 = w + 2 * (size_t)K;
  const int8_t* restrict w3 = w + 3 * (size_t)K;
  int32_t s0 = s[0], s1 = s[1], s2 = s[2], s3 = s[3];
  for (int k = 0; k < K; ++k) {
    const int32_t v = c[k];
    s0 += w0[k] * v;
    s1 += w1[k] * v;
    s2 += w2[k] * v;
    s3 += w3[k] * v;
  }
  s[0] = s0;
  s[1] = s1;
  s[2] = s2;
  s[3] = s3;
}

/* The dot product of the column c with the weight row w. */
TM_UNUSED static int32_t tm_coldot1_TMPL_XC(const int16_t* restrict c, const int8_t* restrict w, int K) {
  int32_t s = 0;
  for (int k = 0; k < K; ++k) s += w[k] * (int32_t)c[k];
  return s;
}
#endif
