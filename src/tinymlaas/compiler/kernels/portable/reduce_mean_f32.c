static void tm_reduce_mean_f32(const float* x, float* y, int O, int R, int I) {
  for (int o = 0; o < O; ++o) {
    const float* xo = x + (size_t)o * R * I;
    float* yo = y + (size_t)o * I;
    for (int i = 0; i < I; ++i) yo[i] = 0.0f;
    for (int r = 0; r < R; ++r) {
      const float* xr = xo + (size_t)r * I;
      for (int i = 0; i < I; ++i) yo[i] += xr[i];
    }
    for (int i = 0; i < I; ++i) yo[i] /= (float)R;
  }
}
