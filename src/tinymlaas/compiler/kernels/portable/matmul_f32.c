/* Batched y[i] = a[i] @ b[i] with broadcast batch offsets (in elements). */
static void tm_matmul_f32(const float* a, const float* b, float* y, int batches,
                          const int32_t* aoff, const int32_t* boff, int M, int K, int N) {
  for (int i = 0; i < batches; ++i) {
    const float* ai = a + aoff[i];
    const float* bi = b + boff[i];
    float* yi = y + (size_t)i * M * N;
    for (int m = 0; m < M; ++m) {
      float* ym = yi + (size_t)m * N;
      for (int n = 0; n < N; ++n) ym[n] = 0.0f;
      for (int k = 0; k < K; ++k) {
        const float av = ai[(size_t)m * K + k];
        const float* bk = bi + (size_t)k * N;
        for (int n = 0; n < N; ++n) ym[n] += av * bk[n];
      }
    }
  }
}
