/* Direct convolution, one output row at a time in tiles of TM_TILE columns. */
#define TM_STORE(a, j) ((a) < lo ? lo : ((a) > hi ? hi : (a)))
static void tm_conv2d_f32(const float* x, const float* w, const float* b, float* y,
                       int N, int C, int H, int W, int M, int OH, int OW, int KH, int KW,
                       int SH, int SW, int PT, int PL, int DH, int DW, int G, float lo, float hi) {
  const int cg = C / G, mg = M / G;
  float acc[TM_TILE];
  for (int n = 0; n < N; ++n) {
    for (int m = 0; m < M; ++m) {
      const float* xg = x + ((size_t)n * C + (size_t)(m / mg) * cg) * H * W;
      const float* wm = w + (size_t)m * cg * KH * KW;
      const float bias = b ? (float)b[m] : (float)0;
      float* ym = y + ((size_t)n * M + m) * OH * OW;
      
      for (int oy = 0; oy < OH; ++oy) {
        const int iy0 = oy * SH - PT;
        const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
        for (int t0 = 0; t0 < OW; t0 += TM_TILE) {
          const int t1 = t0 + TM_TILE < OW ? t0 + TM_TILE : OW;
          tm_convtile_f32(xg, wm, acc, bias, cg, H, W, KH, KW, SW, DH, DW, PL, iy0, ky0, ky1, t0,
                     t1, 0.0f);
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
