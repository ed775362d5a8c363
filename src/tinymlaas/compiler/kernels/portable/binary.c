/* Elementwise with broadcasting: shape is the output shape (rank <= 8, already collapsed),
   sa / sb the element strides of a and b per output dimension (0 where broadcast). */
static void tm_binary_TMPL_OP_TMPL_S(const TMPL_XT* a, const TMPL_XT* b, TMPL_XT* y, int rank,
                               const int32_t* shape, const int32_t* sa, const int32_t* sb) {
  int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int32_t inner = shape[rank - 1], ia = sa[rank - 1], ib = sb[rank - 1];
  int32_t outer = 1;
  for (int d = 0; d < rank - 1; ++d) outer *= shape[d];
  for (int32_t o = 0; o < outer; ++o) {
    int32_t oa = 0, ob = 0;
    for (int d = 0; d < rank - 1; ++d) {
      oa += idx[d] * sa[d];
      ob += idx[d] * sb[d];
    }
    const TMPL_XT* ap = a + oa;
    const TMPL_XT* bp = b + ob;
    if (ia == 1 && ib == 1) {
      for (int32_t i = 0; i < inner; ++i) {
        const TMPL_XT u = ap[i], v = bp[i];
        y[i] = TMPL_EXPR;
      }
    } else {
      for (int32_t i = 0; i < inner; ++i) {
        const TMPL_XT u = ap[i * ia], v = bp[i * ib];
        y[i] = TMPL_EXPR;
      }
    }
    y += inner;
    for (int d = rank - 2; d >= 0; --d) {
      if (++idx[d] < shape[d]) break;
      idx[d] = 0;
    }
  }
}
