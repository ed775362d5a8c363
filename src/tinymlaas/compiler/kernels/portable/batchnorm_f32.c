static void tm_batchnorm_f32(const float* x, const float* scale, const float* bias,
                             const float* mean, const float* var, float* y, int N, int C,
                             int inner, float eps) {
  for (int n = 0; n < N; ++n) {
    for (int c = 0; c < C; ++c) {
      const float a = scale[c] / sqrtf(var[c] + eps);
      const float b = bias[c] - mean[c] * a;
      const size_t base = ((size_t)n * C + c) * inner;
      for (int i = 0; i < inner; ++i) y[base + i] = x[base + i] * a + b;
    }
  }
}
