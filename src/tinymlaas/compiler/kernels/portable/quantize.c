/* ONNX QuantizeLinear along one axis: x[outer, C, inner]; round half to even, saturate. */
static void tm_quantize_TMPL_S(const float* x, TMPL_YT* y, int32_t outer, int32_t C, int32_t inner,
                           const float* scale, const TMPL_YT* zp) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t c = 0; c < C; ++c) {
      const float s = scale[c];
      const float z = (float)zp[c];
      const size_t base = ((size_t)o * C + c) * inner;
      for (int32_t i = 0; i < inner; ++i) {
        float v = rintf(x[base + i] / s) + z;
        v = v < TMPL_LOF ? TMPL_LOF : (v > TMPL_HIF ? TMPL_HIF : v);
        y[base + i] = (TMPL_YT)v;
      }
    }
  }
}
