/* The portable kernel, but a pointwise convolution (1x1, stride 1, no padding) runs
   over each plane as one row: the DSP tile's inner loops then run full tiles instead
   of short rows. Same sums in the same order per output: bit-identical. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static void tm_qaddtile_TMPL_S(const int32_t* acc, int n, TMPL_YT* y, const TMPL_YT* r, int32_t mm,
                           int32_t sm, int32_t cz, int32_t clo, int32_t chi, int32_t rz,
                           int32_t yz, int32_t ma, int32_t sha, int32_t mb, int32_t shb,
                           int32_t my, int32_t shy, int32_t lo, int32_t hi) {
  /* y may be r (in place): element i is read before it is written. */
  for (int i = 0; i < n; ++i)
    y[i] = (TMPL_YT)tm_qadd1(tm_clampi(tm_mbqm(acc[i], mm, sm) + cz, clo, chi) - cz,
                         (int32_t)r[i] - rz, ma, sha, mb, shb, my, shy, yz, lo, hi);
}

/* Direct convolution, one output row at a time in tiles of TM_TILE columns. */
#define TM_STORE(a, j) (a)
static void tm_qconv2d_add_TMPL_S(const TMPL_XT* x, const int8_t* w, const int32_t* b, TMPL_YT* y,
                       int N, int C, int H, int W, int M, int OH, int OW, int KH, int KW,
                       int SH, int SW, int PT, int PL, int DH, int DW, int G, int32_t xz, int32_t cz, const int32_t* mult, const int32_t* shift, int32_t clo, int32_t chi, const TMPL_YT* r, int32_t rz, int32_t yz, int32_t ma, int32_t sha, int32_t mb, int32_t shb, int32_t my, int32_t shy, int32_t lo, int32_t hi) {
  const int cg = C / G, mg = M / G;
  if (KH == 1 && KW == 1 && SH == 1 && SW == 1 && PT == 0 && PL == 0 && OH == H &&
      OW == W) { /* pointwise: each plane is one long row, so the tiles are full */
    W *= H;
    OW = W;
    H = 1;
    OH = 1;
  }
  if (mg >= 2 && cg * KH * KW <= TM_COLMAX) {
    /* Several output channels per window: columns of two pixels, two channels at a time. */
    const int K = cg * KH * KW, P = OH * OW;
    int16_t col[2 * TM_COLMAX];
    for (int n = 0; n < N; ++n) {
      for (int g = 0; g < G; ++g) {
        const TMPL_XT* xg = x + ((size_t)n * C + (size_t)g * cg) * H * W;
        const int8_t* wg = w + (size_t)g * mg * K;
        TMPL_YT* yg = y + ((size_t)n * M + (size_t)g * mg) * P;
        for (int j = 0; j < P; j += 2) {
          const int two = j + 1 < P;
          const int j1 = two ? j + 1 : j; /* a lone last pixel fills both columns */
          tm_im2col_TMPL_XC(xg, col, 0, cg, H, W, KH, KW, DH, DW, (j / OW) * SH - PT,
                            (j % OW) * SW - PL, xz);
          tm_im2col_TMPL_XC(xg, col, 1, cg, H, W, KH, KW, DH, DW, (j1 / OW) * SH - PT,
                            (j1 % OW) * SW - PL, xz);
          int m = 0;
          for (; m < mg; m += 2) {
            const int mo = g * mg + m;
            int32_t s[4] = {0, 0, 0, 0};
            s[0] = s[1] = b ? b[mo] : 0;
            if (m + 1 < mg) {
              s[2] = s[3] = b ? b[mo + 1] : 0;
              tm_colmac2_TMPL_XC(col, K, wg + (size_t)m * K, wg + (size_t)(m + 1) * K, s);
            } else {
              tm_colmac1_TMPL_XC(col, K, wg + (size_t)m * K, s);
            }
            for (int q = 0; q < 2 && (m + q < mg); ++q) {
              TMPL_YT* yq = yg + (size_t)(m + q) * P + j;
              const int32_t mm = mult[mo + q], sm = shift[mo + q];
              const TMPL_YT* rq = r + (yq - y);
              for (int e = 0; e < 1 + two; ++e)
                yq[e] = (TMPL_YT)tm_qadd1(
                    tm_clampi(tm_mbqm(s[2 * q + e], mm, sm) + cz, clo, chi) - cz,
                    (int32_t)rq[e] - rz, ma, sha, mb, shb, my, shy, yz, lo, hi);
            }
          }
        }
      }
    }
    return;
  }
  int32_t acc[TM_TILE];
  for (int n = 0; n < N; ++n) {
    for (int m = 0; m < M; ++m) {
      const TMPL_XT* xg = x + ((size_t)n * C + (size_t)(m / mg) * cg) * H * W;
      const int8_t* wm = w + (size_t)m * cg * KH * KW;
      const int32_t bias = b ? (int32_t)b[m] : (int32_t)0;
      TMPL_YT* ym = y + ((size_t)n * M + m) * OH * OW;
      const int32_t mm = mult[m], sm = shift[m];
      const TMPL_YT* rm = r + ((size_t)n * M + m) * OH * OW;
      for (int oy = 0; oy < OH; ++oy) {
        const int iy0 = oy * SH - PT;
        const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
        for (int t0 = 0; t0 < OW; t0 += TM_TILE) {
          const int t1 = t0 + TM_TILE < OW ? t0 + TM_TILE : OW;
          tm_convtile_TMPL_XC(xg, wm, acc, bias, cg, H, W, KH, KW, SW, DH, DW, PL, iy0, ky0, ky1, t0,
                     t1, xz);
          tm_qaddtile_TMPL_S(acc, t1 - t0, ym + oy * OW + t0, rm + oy * OW + t0, mm, sm, cz, clo, chi,
                         rz, yz, ma, sha, mb, shb, my, shy, lo, hi);
        }
      }
    }
  }
}
#undef TM_STORE
