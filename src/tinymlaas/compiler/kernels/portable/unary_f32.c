static void tm_unary_TMPL_OP_f32(const float* x, float* y, int32_t n, float p0, float p1) {
  (void)p0;
  (void)p1;
  for (int32_t i = 0; i < n; ++i) {
    const float v = x[i];
    y[i] = TMPL_EXPR;
  }
}
