static void tm_copy2d(void* dst, const void* src, int32_t rows, int32_t row_bytes,
                      int32_t dst_stride, int32_t src_stride) {
  for (int32_t r = 0; r < rows; ++r)
    memcpy((uint8_t*)dst + (size_t)r * dst_stride, (const uint8_t*)src + (size_t)r * src_stride,
           (size_t)row_bytes);
}
