/* y[M,N] = alpha * op(a) op(b) + bias; op transposes when ta / tb is set.
   bias_mode: 0 none, 1 one value per column n, 2 a full [M,N] matrix. */
static void tm_gemm_f32(const float* a, const float* b, const float* bias, float* y,
                        int M, int K, int N, int ta, int tb, float alpha, int bias_mode,
                        float lo, float hi) {
  if (!ta && tb) {
    for (int m = 0; m < M; ++m) {
      const float* am = a + (size_t)m * K;
      for (int n = 0; n < N; ++n) {
        const float* bn = b + (size_t)n * K;
        /* Eight partial sums: a fixed summation order the compiler can vectorise. */
        float part[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
        int k = 0;
        for (; k + 8 <= K; k += 8)
          for (int j = 0; j < 8; ++j) part[j] += am[k + j] * bn[k + j];
        float acc = ((part[0] + part[4]) + (part[1] + part[5])) +
                    ((part[2] + part[6]) + (part[3] + part[7]));
        for (; k < K; ++k) acc += am[k] * bn[k];
        acc *= alpha;
        if (bias_mode == 1) acc += bias[n];
        else if (bias_mode == 2) acc += bias[(size_t)m * N + n];
        y[(size_t)m * N + n] = acc < lo ? lo : (acc > hi ? hi : acc);
      }
    }
    return;
  }
  for (int m = 0; m < M; ++m) {
    float* ym = y + (size_t)m * N;
    for (int n = 0; n < N; ++n) ym[n] = 0.0f;
    for (int k = 0; k < K; ++k) {
      const float av = ta ? a[(size_t)k * M + m] : a[(size_t)m * K + k];
      if (tb) {
        for (int n = 0; n < N; ++n) ym[n] += av * b[(size_t)n * K + k];
      } else {
        const float* bk = b + (size_t)k * N;
        for (int n = 0; n < N; ++n) ym[n] += av * bk[n];
      }
    }
    for (int n = 0; n < N; ++n) {
      float acc = ym[n] * alpha;
      if (bias_mode == 1) acc += bias[n];
      else if (bias_mode == 2) acc += bias[(size_t)m * N + n];
      ym[n] = acc < lo ? lo : (acc > hi ? hi : acc);
    }
  }
}
