/* The portable kernel, but a pointwise convolution (1x1, stride 1, no padding) runs
   over each plane as one row: the DSP tile's inner loops then run full tiles instead
   of short rows. Same sums in the same order per output: bit-identical. */
/* Direct convolution, one output row at a time in tiles of TM_TILE columns. */
#define TM_STORE(a, j) ((TMPL_YT)tm_clampi(tm_mbqm((a), mm, sm) + yz, lo, hi))
static void tm_qconv2d_TMPL_S(const TMPL_XT* x, const int8_t* w, const int32_t* b, TMPL_YT* y,
                       int N, int C, int H, int W, int M, int OH, int OW, int KH, int KW,
                       int SH, int SW, int PT, int PL, int DH, int DW, int G, int32_t xz, int32_t yz, const int32_t* mult, const int32_t* shift, int32_t lo, int32_t hi) {
  const int cg = C / G, mg = M / G;
  if (KH == 1 && KW == 1 && SH == 1 && SW == 1 && PT == 0 && PL == 0 && OH == H &&
      OW == W) { /* pointwise: each plane is one long row, so the tiles are full */
    W *= H;
    OW = W;
    H = 1;
    OH = 1;
  }
  int32_t acc[TM_TILE];
  for (int n = 0; n < N; ++n) {
    for (int m = 0; m < M; ++m) {
      const TMPL_XT* xg = x + ((size_t)n * C + (size_t)(m / mg) * cg) * H * W;
      const int8_t* wm = w + (size_t)m * cg * KH * KW;
      const int32_t bias = b ? (int32_t)b[m] : (int32_t)0;
      TMPL_YT* ym = y + ((size_t)n * M + m) * OH * OW;
      const int32_t mm = mult[m], sm = shift[m];
      for (int oy = 0; oy < OH; ++oy) {
        const int iy0 = oy * SH - PT;
        const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
        for (int t0 = 0; t0 < OW; t0 += TM_TILE) {
          const int t1 = t0 + TM_TILE < OW ? t0 + TM_TILE : OW;
          tm_convtile_TMPL_XC(xg, wm, acc, bias, cg, H, W, KH, KW, SW, DH, DW, PL, iy0, ky0, ky1, t0,
                     t1, xz);
          for (int i = 0; i < t1 - t0; ++i) {
            const int j = oy * OW + t0 + i;
            ym[j] = TM_STORE(acc[i], j);
          }
        }
      }
    }
  }
}
#undef TM_STORE
