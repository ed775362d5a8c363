/* Fully connected: y[m,n] = requant(bias[n] + sum_k (a[m,k] - az) * w[n,k]). */
static void tm_qgemm_TMPL_S(const TMPL_XT* a, const int8_t* w, const int32_t* b, TMPL_YT* y,
                        int M, int K, int N, int32_t az, int32_t yz,
                        const int32_t* mult, const int32_t* shift, int32_t lo, int32_t hi) {
  for (int m = 0; m < M; ++m) {
    const TMPL_XT* am = a + (size_t)m * K;
    for (int n = 0; n < N; ++n) {
      const int8_t* wn = w + (size_t)n * K;
      int32_t acc = b ? b[n] : 0;
      for (int k = 0; k < K; ++k) acc += ((int32_t)am[k] - az) * wn[k];
      y[(size_t)m * N + n] = (TMPL_YT)tm_clampi(tm_mbqm(acc, mult[n], shift[n]) + yz, lo, hi);
    }
  }
}
