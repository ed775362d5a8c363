static void tm_gap_f32(const float* x, float* y, int P, int HW) {
  for (int p = 0; p < P; ++p) {
    const float* xp = x + (size_t)p * HW;
    float acc = 0.0f;
    for (int i = 0; i < HW; ++i) acc += xp[i];
    y[p] = acc / (float)HW;
  }
}
