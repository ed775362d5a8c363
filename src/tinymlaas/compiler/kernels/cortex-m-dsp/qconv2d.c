/* The portable kernel, but a pointwise convolution (1x1, stride 1, no padding) runs in
   tm_pointwise, or, grouped, over each plane as one row: the DSP tile's inner loops then
   run full tiles instead of short rows. The same sums: bit-identical. */
/* Direct convolution, one output row at a time in tiles of TM_TILE columns. */
/* Pointwise convolution (1x1, stride 1, no padding, one group) over planes of P pixels:
   two output channels and four pixels at a time keep eight sums in registers across the
   input channels, which go four at a time: SXTB16 pairs the weights of channels c, c + 2
   and c + 1, c + 3, and PKHBT/PKHTB pair the inputs the same way. Bit-identical to the
   portable kernel (the same integer sums). */
static void tm_pointwise_TMPL_S(const TMPL_XT* x, const int8_t* w, const int32_t* b,
                                TMPL_YT* y, int N, int C, int P, int M, int32_t xz,
                                int32_t yz, const int32_t* mult, const int32_t* shift,
                                int32_t lo, int32_t hi) {
  const uint32_t nxz = tm_pack16(-xz, -xz);
  for (int n = 0; n < N; ++n) {
    const TMPL_XT* xn = x + (size_t)n * C * P;
    TMPL_YT* yn = y + (size_t)n * M * P;
    int m = 0;
    for (; m + 2 <= M; m += 2) {
      const int8_t* w0 = w + (size_t)m * C;
      const int8_t* w1 = w0 + C;
      const int32_t b0 = b ? b[m] : 0, b1 = b ? b[m + 1] : 0;
      TMPL_YT* y0 = yn + (size_t)m * P;
      TMPL_YT* y1 = y0 + P;
      int p = 0;
      for (; p + 4 <= P; p += 4) {
        int32_t s00 = b0, s01 = b0, s02 = b0, s03 = b0;
        int32_t s10 = b1, s11 = b1, s12 = b1, s13 = b1;
        const TMPL_XT* xp = xn + p;
        int c = 0;
        for (; c + 4 <= C; c += 4) {
          const TMPL_XT* xc = xp + (size_t)c * P;
          const uint32_t v0 = tm_ld32(xc), v1 = tm_ld32(xc + P);
          const uint32_t v2 = tm_ld32(xc + 2 * (size_t)P), v3 = tm_ld32(xc + 3 * (size_t)P);
          const uint32_t wa = tm_ld32(w0 + c), wb = tm_ld32(w1 + c);
          const int32_t wa02 = __sxtb16(wa), wa13 = tm_sxtb16_ror8(wa);
          const int32_t wb02 = __sxtb16(wb), wb13 = tm_sxtb16_ror8(wb);
          const int32_t a02 = tm_xtab16_TMPL_XC(nxz, v0), a13 = tm_xtab16r_TMPL_XC(nxz, v0);
          const int32_t b02 = tm_xtab16_TMPL_XC(nxz, v1), b13 = tm_xtab16r_TMPL_XC(nxz, v1);
          const int32_t c02 = tm_xtab16_TMPL_XC(nxz, v2), c13 = tm_xtab16r_TMPL_XC(nxz, v2);
          const int32_t d02 = tm_xtab16_TMPL_XC(nxz, v3), d13 = tm_xtab16r_TMPL_XC(nxz, v3);
          uint32_t u = tm_pack16(a02, c02), v = tm_pack16(b02, d02); /* pixel 0 */
          s00 = __smlad(u, wa02, s00);
          s10 = __smlad(u, wb02, s10);
          s00 = __smlad(v, wa13, s00);
          s10 = __smlad(v, wb13, s10);
          u = tm_pack16(a13, c13); /* pixel 1 */
          v = tm_pack16(b13, d13);
          s01 = __smlad(u, wa02, s01);
          s11 = __smlad(u, wb02, s11);
          s01 = __smlad(v, wa13, s01);
          s11 = __smlad(v, wb13, s11);
          u = tm_packhi(a02, c02); /* pixel 2 */
          v = tm_packhi(b02, d02);
          s02 = __smlad(u, wa02, s02);
          s12 = __smlad(u, wb02, s12);
          s02 = __smlad(v, wa13, s02);
          s12 = __smlad(v, wb13, s12);
          u = tm_packhi(a13, c13); /* pixel 3 */
          v = tm_packhi(b13, d13);
          s03 = __smlad(u, wa02, s03);
          s13 = __smlad(u, wb02, s13);
          s03 = __smlad(v, wa13, s03);
          s13 = __smlad(v, wb13, s13);
        }
        for (; c < C; ++c) {
          const TMPL_XT* xc = xp + (size_t)c * P;
          const int32_t k0 = w0[c], k1 = w1[c];
          const int32_t x0 = (int32_t)xc[0] - xz, x1 = (int32_t)xc[1] - xz;
          const int32_t x2 = (int32_t)xc[2] - xz, x3 = (int32_t)xc[3] - xz;
          s00 += k0 * x0;
          s01 += k0 * x1;
          s02 += k0 * x2;
          s03 += k0 * x3;
          s10 += k1 * x0;
          s11 += k1 * x1;
          s12 += k1 * x2;
          s13 += k1 * x3;
        }
        const int32_t mm0 = mult[m], sm0 = shift[m], mm1 = mult[m + 1], sm1 = shift[m + 1];
        y0[p] = (TMPL_YT)tm_clampi(tm_mbqm(s00, mm0, sm0) + yz, lo, hi);
        y0[p + 1] = (TMPL_YT)tm_clampi(tm_mbqm(s01, mm0, sm0) + yz, lo, hi);
        y0[p + 2] = (TMPL_YT)tm_clampi(tm_mbqm(s02, mm0, sm0) + yz, lo, hi);
        y0[p + 3] = (TMPL_YT)tm_clampi(tm_mbqm(s03, mm0, sm0) + yz, lo, hi);
        y1[p] = (TMPL_YT)tm_clampi(tm_mbqm(s10, mm1, sm1) + yz, lo, hi);
        y1[p + 1] = (TMPL_YT)tm_clampi(tm_mbqm(s11, mm1, sm1) + yz, lo, hi);
        y1[p + 2] = (TMPL_YT)tm_clampi(tm_mbqm(s12, mm1, sm1) + yz, lo, hi);
        y1[p + 3] = (TMPL_YT)tm_clampi(tm_mbqm(s13, mm1, sm1) + yz, lo, hi);
      }
      for (; p < P; ++p) {
        int32_t s0 = b0, s1 = b1;
        for (int c = 0; c < C; ++c) {
          const int32_t xv = (int32_t)xn[(size_t)c * P + p] - xz;
          s0 += w0[c] * xv;
          s1 += w1[c] * xv;
        }
        y0[p] = (TMPL_YT)tm_clampi(tm_mbqm(s0, mult[m], shift[m]) + yz, lo, hi);
        y1[p] = (TMPL_YT)tm_clampi(tm_mbqm(s1, mult[m + 1], shift[m + 1]) + yz, lo, hi);
      }
    }
    for (; m < M; ++m) {
      const int8_t* wm = w + (size_t)m * C;
      for (int p = 0; p < P; ++p) {
        int32_t s = b ? b[m] : 0;
        for (int c = 0; c < C; ++c) s += wm[c] * ((int32_t)xn[(size_t)c * P + p] - xz);
        yn[(size_t)m * P + p] = (TMPL_YT)tm_clampi(tm_mbqm(s, mult[m], shift[m]) + yz, lo, hi);
      }
    }
  }
}

#define TM_STORE(a, j) ((TMPL_YT)tm_clampi(tm_mbqm((a), mm, sm) + yz, lo, hi))
static void tm_qconv2d_TMPL_S(const TMPL_XT* x, const int8_t* w, const int32_t* b, TMPL_YT* y,
                       int N, int C, int H, int W, int M, int OH, int OW, int KH, int KW,
                       int SH, int SW, int PT, int PL, int DH, int DW, int G, int32_t xz, int32_t yz, const int32_t* mult, const int32_t* shift, int32_t lo, int32_t hi) {
  const int cg = C / G, mg = M / G;
  if (KH == 1 && KW == 1 && SH == 1 && SW == 1 && PT == 0 && PL == 0 && OH == H &&
      OW == W && G == 1) {
    tm_pointwise_TMPL_S(x, w, b, y, N, C, H * W, M, xz, yz, mult, shift, lo, hi);
    return;
  }
  if (KH == 1 && KW == 1 && SH == 1 && SW == 1 && PT == 0 && PL == 0 && OH == H &&
      OW == W) { /* grouped pointwise: each plane is one long row, so the tiles are full */
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
              yq[0] = (TMPL_YT)tm_clampi(tm_mbqm(s[2 * q], mm, sm) + yz, lo, hi);
              if (two) yq[1] = (TMPL_YT)tm_clampi(tm_mbqm(s[2 * q + 1], mm, sm) + yz, lo, hi);
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
