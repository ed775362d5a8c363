/* y[o] = x[sum_d maps_d[o_d] * istride[d]], or fill[0] where some maps_d[o_d] < 0. The rank
   tables maps_d (oshape[d] entries each) lie back to back in maps. */
static void tm_remap_TMPL_S(const TMPL_XT* x, TMPL_XT* y, int rank, const int32_t* oshape,
                        const int32_t* istride, const int32_t* maps, const TMPL_XT* fill) {
  int32_t idx[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const int32_t* table[8];
  int32_t total = 1;
  const int32_t* m = maps;
  for (int d = 0; d < rank; ++d) {
    table[d] = m;
    m += oshape[d];
    total *= oshape[d];
  }
  for (int32_t i = 0; i < total; ++i) {
    size_t off = 0;
    int inside = 1;
    for (int d = 0; d < rank; ++d) {
      const int32_t k = table[d][idx[d]];
      if (k < 0) {
        inside = 0;
        break;
      }
      off += (size_t)k * (size_t)istride[d];
    }
    y[i] = inside ? x[off] : fill[0];
    for (int d = rank - 1; d >= 0; --d) {
      if (++idx[d] < oshape[d]) break;
      idx[d] = 0;
    }
  }
}
