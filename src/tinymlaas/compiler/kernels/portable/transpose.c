/* y (shape oshape) gets x read with stride istride[d] along output dimension d. */
static void tm_transpose_TMPL_S(const TMPL_XT* x, TMPL_XT* y, int rank, const int32_t* oshape,
                            const int32_t* istride) {
  int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int32_t total = 1;
  for (int d = 0; d < rank; ++d) total *= oshape[d];
  size_t off = 0;
  for (int32_t i = 0; i < total; ++i) {
    y[i] = x[off];
    for (int d = rank - 1; d >= 0; --d) {
      off += istride[d];
      if (++idx[d] < oshape[d]) break;
      off -= (size_t)istride[d] * oshape[d];
      idx[d] = 0;
    }
  }
}
