/* Same scale and zero point in and out, padding not counted: TFLite's rounded integer
   average. Otherwise the average is kept
   with 8 extra bits and requantized with mult/shift (= in_scale / (out_scale * 256)). */
static void tm_qavgpool_TMPL_S(const TMPL_XT* x, TMPL_YT* y, int P, int H, int W, int OH, int OW,
                           int KH, int KW, int SH, int SW, int PT, int PL, int PB, int PR,
                           int DH, int DW, int include_pad, int32_t xz, int32_t yz,
                           int same_scale, int32_t mult, int32_t shift, int32_t lo, int32_t hi) {
  for (int p = 0; p < P; ++p) {
    const TMPL_XT* xp = x + (size_t)p * H * W;
    TMPL_YT* yp = y + (size_t)p * OH * OW;
    for (int oy = 0; oy < OH; ++oy) {
      const int iy0 = oy * SH - PT;
      const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
      const int py = include_pad ? tm_kend(iy0 + PT, DH, KH, H + PT + PB) - tm_kbegin(iy0 + PT, DH)
                                 : ky1 - ky0;
      for (int ox = 0; ox < OW; ++ox) {
        const int ix0 = ox * SW - PL;
        const int kx0 = tm_kbegin(ix0, DW), kx1 = tm_kend(ix0, DW, KW, W);
        const int px = include_pad
            ? tm_kend(ix0 + PL, DW, KW, W + PL + PR) - tm_kbegin(ix0 + PL, DW) : kx1 - kx0;
        int32_t acc = 0;
        for (int ky = ky0; ky < ky1; ++ky) {
          const TMPL_XT* xr = xp + (iy0 + ky * DH) * W + ix0;
          for (int kx = kx0; kx < kx1; ++kx) acc += (int32_t)xr[kx * DW] - xz;
        }
        const int32_t count = py * px > 0 ? py * px : 1;
        int32_t v;
        if (same_scale) {
          /* TFLite: the rounded mean of the raw values (zero points are equal). */
          const int32_t raw = acc + (ky1 - ky0) * (kx1 - kx0) * xz;
          v = (raw > 0 ? (raw + count / 2) / count : (raw - count / 2) / count) - yz;
        } else {
          const int64_t wide = (int64_t)acc * 256;
          const int32_t avg = (int32_t)(wide >= 0 ? (wide + count / 2) / count
                                                  : (wide - count / 2) / count);
          v = tm_mbqm(avg, mult, shift);
        }
        yp[oy * OW + ox] = (TMPL_YT)tm_clampi(v + yz, lo, hi);
      }
    }
  }
}
