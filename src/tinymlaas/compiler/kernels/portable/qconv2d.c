/* Direct convolution, one output row at a time in tiles of TM_TILE columns. */
#define TM_STORE(a, j) ((TMPL_YT)tm_clampi(tm_mbqm((a), mm, sm) + yz, lo, hi))
static void tm_qconv2d_TMPL_S(const TMPL_XT* x, const int8_t* w, const int32_t* b, TMPL_YT* y,
                       int N, int C, int H, int W, int M, int OH, int OW, int KH, int KW,
                       int SH, int SW, int PT, int PL, int DH, int DW, int G, int32_t xz, int32_t yz, const int32_t* mult, const int32_t* shift, int32_t lo, int32_t hi) {
  const int cg = C / G, mg = M / G;
#if !defined(__OPTIMIZE_SIZE__)
  if (mg >= 2 && cg * KH * KW <= TM_COLMAX) {
    /* Several output channels per window: one column per pixel, four channels at a time. */
    const int K = cg * KH * KW, P = OH * OW;
    int16_t col[TM_COLMAX];
    int32_t s[4];
    for (int n = 0; n < N; ++n) {
      for (int g = 0; g < G; ++g) {
        const TMPL_XT* xg = x + ((size_t)n * C + (size_t)g * cg) * H * W;
        const int8_t* wg = w + (size_t)g * mg * K;
        TMPL_YT* yg = y + ((size_t)n * M + (size_t)g * mg) * P;
        for (int j = 0; j < P; ++j) {
          tm_column_TMPL_XC(xg, col, cg, H, W, KH, KW, DH, DW, (j / OW) * SH - PT,
                            (j % OW) * SW - PL, xz);
          for (int m = 0; m < mg; m += 4) {
            const int q4 = mg - m < 4 ? mg - m : 4;
            for (int q = 0; q < q4; ++q) s[q] = b ? b[g * mg + m + q] : 0;
            if (q4 == 4)
              tm_coldot4_TMPL_XC(col, wg + (size_t)m * K, K, s);
            else
              for (int q = 0; q < q4; ++q) s[q] += tm_coldot1_TMPL_XC(col, wg + (size_t)(m + q) * K, K);
            for (int q = 0; q < q4; ++q) {
              const size_t at = (size_t)(m + q) * P + j;
              const int32_t mm = mult[g * mg + m + q], sm = shift[g * mg + m + q];
              yg[at] = (TMPL_YT)tm_clampi(tm_mbqm(s[q], mm, sm) + yz, lo, hi);
            }
          }
        }
      }
    }
    return;
  }
#endif
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
