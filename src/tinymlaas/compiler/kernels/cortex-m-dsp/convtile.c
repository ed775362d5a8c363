/* Convolution tile on the DSP extension, with the contract of the portable one: acc gets
   bias plus every (channel, ky, kx) tap over the outputs [t0, t1) of one row. One SMLAD
   adds two 16-bit products to a 32-bit sum: the same tap of two input channels, or, for a
   single channel (depthwise), two neighbouring taps kx, kx + 1 (strides 1 and 2). SXTAB16
   (UXTAB16 for uint8) widens two input bytes and subtracts the zero point at once.
   The sums are the same integers as the portable kernel's: bit-identical results. */
static void tm_convtile_TMPL_XC(const TMPL_XT* xg, const int8_t* wm, int32_t* acc, int32_t bias,
                              int cg, int H, int W, int KH, int KW, int SW, int DH, int DW,
                              int PL, int iy0, int ky0, int ky1, int t0, int t1, int32_t xz) {
  const uint32_t nxz = tm_pack16(-xz, -xz);
  int c = 0;
  for (int i = 0; i < t1 - t0; ++i) acc[i] = bias;
  for (; c + 2 <= cg; c += 2) {
    const TMPL_XT* xa = xg + (size_t)c * H * W;
    const TMPL_XT* xb = xa + (size_t)H * W;
    const int8_t* wa = wm + c * KH * KW;
    const int8_t* wb = wa + KH * KW;
    for (int ky = ky0; ky < ky1; ++ky) {
      const int row = (iy0 + ky * DH) * W;
      for (int kx = 0; kx < KW; ++kx) {
        const int off = kx * DW - PL;
        int lo, hi;
        if (!tm_taprange(off, W, SW, t0, t1, &lo, &hi)) continue;
        const int32_t w0 = wa[ky * KW + kx], w1 = wb[ky * KW + kx];
        const uint32_t wp = tm_pack16(w0, w1);
        const TMPL_XT* ra = xa + row + off;
        const TMPL_XT* rb = xb + row + off;
        int ox = lo;
        if (SW == 1) {
          for (; ox + 4 <= hi; ox += 4) {
            const uint32_t va = tm_ld32(ra + ox), vb = tm_ld32(rb + ox);
            const int32_t a02 = tm_xtab16_TMPL_XC(nxz, va), a13 = tm_xtab16r_TMPL_XC(nxz, va);
            const int32_t b02 = tm_xtab16_TMPL_XC(nxz, vb), b13 = tm_xtab16r_TMPL_XC(nxz, vb);
            int32_t* p = acc + (ox - t0);
            p[0] = __smlad(tm_pack16(a02, b02), wp, p[0]);
            p[1] = __smlad(tm_pack16(a13, b13), wp, p[1]);
            p[2] = __smlad(tm_packhi(a02, b02), wp, p[2]);
            p[3] = __smlad(tm_packhi(a13, b13), wp, p[3]);
          }
        } else if (SW == 2) {
          /* Bytes 0 and 2 of a word are the inputs of two neighbouring outputs. */
          for (; ox + 2 <= hi && 2 * ox + off + 3 < W; ox += 2) {
            const uint32_t va = tm_ld32(ra + 2 * ox), vb = tm_ld32(rb + 2 * ox);
            const int32_t a02 = tm_xtab16_TMPL_XC(nxz, va), b02 = tm_xtab16_TMPL_XC(nxz, vb);
            int32_t* p = acc + (ox - t0);
            p[0] = __smlad(tm_pack16(a02, b02), wp, p[0]);
            p[1] = __smlad(tm_packhi(a02, b02), wp, p[1]);
          }
        }
        for (; ox < hi; ++ox)
          acc[ox - t0] += w0 * ((int32_t)ra[ox * SW] - xz) + w1 * ((int32_t)rb[ox * SW] - xz);
      }
    }
  }
  if (c < cg) { /* the last (or only) channel: pairs of neighbouring taps */
    const TMPL_XT* xc = xg + (size_t)c * H * W;
    const int8_t* wc = wm + c * KH * KW;
    for (int ky = ky0; ky < ky1; ++ky) {
      const TMPL_XT* xr = xc + (iy0 + ky * DH) * W;
      const int8_t* wr = wc + ky * KW;
      int kx = 0;
      if ((SW == 1 || SW == 2) && DW == 1) {
        for (; kx + 2 <= KW; kx += 2) {
          const int off = kx - PL;
          int lo0, hi0, lo1, hi1;
          (void)tm_taprange(off, W, SW, t0, t1, &lo0, &hi0);
          (void)tm_taprange(off + 1, W, SW, t0, t1, &lo1, &hi1);
          /* [L, R): outputs both taps reach; each tap's remainder runs alone. */
          int L = lo0 > lo1 ? lo0 : lo1, R = hi0 < hi1 ? hi0 : hi1;
          if (R <= L) L = R = hi0;
          const int32_t w0 = wr[kx], w1 = wr[kx + 1];
          const uint32_t wp = tm_pack16(w0, w1);
          /* q[ox * SW]: tap kx of output ox, q[ox * SW + 1]: tap kx + 1 */
          const TMPL_XT* q = xr + off;
          int ox = L;
          if (SW == 1) {
            for (; ox + 4 <= R; ox += 4) {
              const uint32_t v = tm_ld32(q + ox);
              const int32_t a02 = tm_xtab16_TMPL_XC(nxz, v), a13 = tm_xtab16r_TMPL_XC(nxz, v);
              const int32_t q4 = (int32_t)q[ox + 4] - xz;
              int32_t* p = acc + (ox - t0);
              p[0] = __smlad(tm_pack16(a02, a13), wp, p[0]);
              p[1] = __smlad(tm_packlh(a13, a02), wp, p[1]);
              p[2] = __smlad(tm_packhi(a02, a13), wp, p[2]);
              p[3] = __smlad(tm_pack16(a13 >> 16, q4), wp, p[3]);
            }
          } else {
            /* Stride 2: bytes 0, 1 of a word are output ox's pair, bytes 2, 3 the next's. */
            for (; ox + 2 <= R; ox += 2) {
              const uint32_t v = tm_ld32(q + 2 * ox);
              const int32_t a02 = tm_xtab16_TMPL_XC(nxz, v), a13 = tm_xtab16r_TMPL_XC(nxz, v);
              int32_t* p = acc + (ox - t0);
              p[0] = __smlad(tm_pack16(a02, a13), wp, p[0]);
              p[1] = __smlad(tm_packhi(a02, a13), wp, p[1]);
            }
          }
          for (; ox < R; ++ox)
            acc[ox - t0] += w0 * ((int32_t)q[ox * SW] - xz) + w1 * ((int32_t)q[ox * SW + 1] - xz);
          const int e0 = L < hi0 ? L : hi0, s0 = R > lo0 ? R : lo0;
          const int e1 = L < hi1 ? L : hi1, s1 = R > lo1 ? R : lo1;
          for (ox = lo0; ox < e0; ++ox) acc[ox - t0] += w0 * ((int32_t)q[ox * SW] - xz);
          for (ox = s0; ox < hi0; ++ox) acc[ox - t0] += w0 * ((int32_t)q[ox * SW] - xz);
          for (ox = lo1; ox < e1; ++ox) acc[ox - t0] += w1 * ((int32_t)q[ox * SW + 1] - xz);
          for (ox = s1; ox < hi1; ++ox) acc[ox - t0] += w1 * ((int32_t)q[ox * SW + 1] - xz);
        }
      }
      for (; kx < KW; ++kx) {
        const int off = kx * DW - PL;
        int lo, hi;
        if (!tm_taprange(off, W, SW, t0, t1, &lo, &hi)) continue;
        const int32_t wv = wr[kx];
        for (int ox = lo; ox < hi; ++ox) acc[ox - t0] += wv * ((int32_t)xr[ox * SW + off] - xz);
      }
    }
  }
}

/* Convolutions that reuse each input window for several output channels go through columns
   (im2col): the window of an output pixel, (x - xz) as 16-bit values in the weights' (c, ky,
   kx) order, 0 for padding (which adds nothing, as in the portable kernel, where it is
   skipped). Two pixels' columns share one buffer, interleaved by groups of four taps
   (pixel 0's four, then pixel 1's), and within each group the taps are stored as k, k + 2,
   k + 1, k + 3: the lanes SXTB16 and SXTB16 ROR #8 give of four weight bytes, so the
   weights are widened straight from the model's layout. The K % 4 last taps follow, pixel
   0's then pixel 1's. At most TM_COLMAX taps; the buffer sits on the stack (4 * TM_COLMAX
   bytes). */
TM_UNUSED static void tm_im2col_TMPL_XC(const TMPL_XT* xg, int16_t* col, int q, int cg, int H, int W,
                              int KH, int KW, int DH, int DW, int iy0, int ix0, int32_t xz) {
  const int K = cg * KH * KW, K4 = K & ~3;
  const int inside = iy0 >= 0 && iy0 + (KH - 1) * DH < H && ix0 >= 0 &&
                     ix0 + (KW - 1) * DW < W;
  int16_t* tail = col + 2 * K4 + q * (K - K4) - K4;
  col += 4 * q;
  int k = 0;
  for (int c = 0; c < cg; ++c) {
    const TMPL_XT* xc = xg + (size_t)c * H * W;
    for (int ky = 0; ky < KH; ++ky) {
      const int iy = iy0 + ky * DH;
      const int rowin = iy >= 0 && iy < H;
      const TMPL_XT* xr = xc + (rowin ? iy : 0) * W;
      for (int kx = 0; kx < KW; ++kx, ++k) {
        const int ix = ix0 + kx * DW;
        const int16_t v = (inside || (rowin && ix >= 0 && ix < W))
                              ? (int16_t)((int32_t)xr[ix] - xz) : (int16_t)0;
        if (k < K4)
          col[((k >> 2) << 3) | ((k & 1) << 1) | ((k >> 1) & 1)] = v;
        else
          tail[k] = v;
      }
    }
  }
}

/* s[0..3] += the sums of output channels 0 and 1 (weight rows w0, w1) over the two
   interleaved columns: (w0.c0, w0.c1, w1.c0, w1.c1), four taps a step, eight SMLADs. */
TM_HOT
TM_UNUSED static void tm_colmac2_TMPL_XC(const int16_t* col, int K, const int8_t* w0, const int8_t* w1,
                               int32_t* s) {
  int32_t s00 = s[0], s01 = s[1], s10 = s[2], s11 = s[3];
  const int K4 = K & ~3;
  const int16_t* c = col;
  for (int i = K >> 2; i > 0; --i) {
    const uint32_t wa = tm_ld32(w0);
    const int32_t wa02 = __sxtb16(wa), wa13 = tm_sxtb16_ror8(wa);
    w0 += 4;
    const uint32_t x0 = tm_ld32(c), x1 = tm_ld32(c + 2);
    s00 = __smlad(x0, wa02, s00);
    s00 = __smlad(x1, wa13, s00);
    const uint32_t x2 = tm_ld32(c + 4), x3 = tm_ld32(c + 6);
    s01 = __smlad(x2, wa02, s01);
    s01 = __smlad(x3, wa13, s01);
    const uint32_t wb = tm_ld32(w1);
    const int32_t wb02 = __sxtb16(wb), wb13 = tm_sxtb16_ror8(wb);
    w1 += 4;
    s10 = __smlad(x0, wb02, s10);
    s10 = __smlad(x1, wb13, s10);
    s11 = __smlad(x2, wb02, s11);
    s11 = __smlad(x3, wb13, s11);
    c += 8;
  }
  const int t = K - K4;
  for (int r = 0; r < t; ++r) {
    s00 += w0[r] * c[r];
    s01 += w0[r] * c[t + r];
    s10 += w1[r] * c[r];
    s11 += w1[r] * c[t + r];
  }
  s[0] = s00;
  s[1] = s01;
  s[2] = s10;
  s[3] = s11;
}

/* s[0..1] += the sums of one output channel (weight row w0) over the two columns. */
TM_HOT
TM_UNUSED static void tm_colmac1_TMPL_XC(const int16_t* col, int K, const int8_t* w0, int32_t* s) {
  int32_t s00 = s[0], s01 = s[1];
  const int K4 = K & ~3;
  const int16_t* c = col;
  const int8_t* const e = w0 + K4;
  while (w0 != e) {
    const uint32_t wa = tm_ld32(w0);
    w0 += 4;
    const int32_t wa02 = __sxtb16(wa), wa13 = tm_sxtb16_ror8(wa);
    s00 = __smlad(tm_ld32(c), wa02, s00);
    s00 = __smlad(tm_ld32(c + 2), wa13, s00);
    s01 = __smlad(tm_ld32(c + 4), wa02, s01);
    s01 = __smlad(tm_ld32(c + 6), wa13, s01);
    c += 8;
  }
  const int t = K - K4;
  for (int r = 0; r < t; ++r) {
    s00 += w0[r] * c[r];
    s01 += w0[r] * c[t + r];
  }
  s[0] = s00;
  s[1] = s01;
}
