static void tm_avgpool_f32(const float* x, float* y, int P, int H, int W, int OH, int OW,
                           int KH, int KW, int SH, int SW, int PT, int PL, int PB, int PR,
                           int DH, int DW, int include_pad) {
  for (int p = 0; p < P; ++p) {
    const float* xp = x + (size_t)p * H * W;
    float* yp = y + (size_t)p * OH * OW;
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
        float acc = 0.0f;
        for (int ky = ky0; ky < ky1; ++ky) {
          const float* xr = xp + (iy0 + ky * DH) * W + ix0;
          for (int kx = kx0; kx < kx1; ++kx) acc += xr[kx * DW];
        }
        const int count = py * px;
        yp[oy * OW + ox] = count > 0 ? acc / (float)count : 0.0f;
      }
    }
  }
}
