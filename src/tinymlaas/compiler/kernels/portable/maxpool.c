static void tm_maxpool_TMPL_S(const TMPL_XT* x, TMPL_XT* y, int P, int H, int W, int OH, int OW,
                          int KH, int KW, int SH, int SW, int PT, int PL, int DH, int DW,
                          TMPL_XT lowest) {
  for (int p = 0; p < P; ++p) {
    const TMPL_XT* xp = x + (size_t)p * H * W;
    TMPL_XT* yp = y + (size_t)p * OH * OW;
    for (int oy = 0; oy < OH; ++oy) {
      const int iy0 = oy * SH - PT;
      const int ky0 = tm_kbegin(iy0, DH), ky1 = tm_kend(iy0, DH, KH, H);
      for (int ox = 0; ox < OW; ++ox) {
        const int ix0 = ox * SW - PL;
        const int kx0 = tm_kbegin(ix0, DW), kx1 = tm_kend(ix0, DW, KW, W);
        TMPL_XT best = lowest;
        for (int ky = ky0; ky < ky1; ++ky) {
          const TMPL_XT* xr = xp + (iy0 + ky * DH) * W + ix0;
          for (int kx = kx0; kx < kx1; ++kx) {
            const TMPL_XT v = xr[kx * DW];
            if (v > best) best = v;
          }
        }
        yp[oy * OW + ox] = best;
      }
    }
  }
}
