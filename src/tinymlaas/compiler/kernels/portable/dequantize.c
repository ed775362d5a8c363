/* ONNX DequantizeLinear along one axis: x[outer, C, inner]. */
static void tm_dequantize_TMPL_S(const TMPL_XT* x, float* y, int32_t outer, int32_t C, int32_t inner,
                             const float* scale, const TMPL_XT* zp) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t c = 0; c < C; ++c) {
      const float s = scale[c];
      const float z = (float)zp[c];
      const size_t base = ((size_t)o * C + c) * inner;
      for (int32_t i = 0; i < inner; ++i) y[base + i] = ((float)x[base + i] - z) * s;
    }
  }
}
