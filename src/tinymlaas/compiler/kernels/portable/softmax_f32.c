static void tm_softmax_f32(const float* x, float* y, int32_t outer, int32_t n, int32_t inner) {
  for (int32_t o = 0; o < outer; ++o) {
    for (int32_t i = 0; i < inner; ++i) {
      const float* xp = x + (size_t)o * n * inner + i;
      float* yp = y + (size_t)o * n * inner + i;
      float mx = xp[0];
      for (int32_t j = 1; j < n; ++j) if (xp[j * inner] > mx) mx = xp[j * inner];
      float sum = 0.0f;
      for (int32_t j = 0; j < n; ++j) {
        const float e = expf(xp[j * inner] - mx);
        yp[j * inner] = e;
        sum += e;
      }
      const float inv = 1.0f / sum;
      for (int32_t j = 0; j < n; ++j) yp[j * inner] *= inv;
    }
  }
}
