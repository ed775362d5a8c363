/* Minimal Cortex-M startup for the tinymlaas on-target harness (QEMU mps2-an386). */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

extern uint32_t _sidata, _sdata, _edata, _sbss, _ebss, _estack;
int main(void);
void tm_semihost_exit(int code);
void tm_semihost_write0(const char* text);

void Reset_Handler(void) {
  /* Enable the FPU (CP10 and CP11 full access) before any floating-point instruction. */
  *(volatile uint32_t*)0xE000ED88u |= (0xFu << 20);
  __asm volatile("dsb\n\tisb" ::: "memory");
  memcpy(&_sdata, &_sidata, (size_t)((char*)&_edata - (char*)&_sdata));
  memset(&_sbss, 0, (size_t)((char*)&_ebss - (char*)&_sbss));
  tm_semihost_exit(main());
  for (;;) {
  }
}

void Default_Handler(void) {
  tm_semihost_write0("FAULT\n");
  tm_semihost_exit(3);
  for (;;) {
  }
}

__attribute__((section(".vectors"), used)) const void* const tm_vectors[16] = {
    &_estack,        Reset_Handler,   Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, 0,
    0,               0,               0,               Default_Handler,
    Default_Handler, 0,               Default_Handler, Default_Handler,
};

static int tm_semihost(int op, const void* arg) {
  register int r0 __asm("r0") = op;
  register const void* r1 __asm("r1") = arg;
  __asm volatile("bkpt 0xAB" : "+r"(r0) : "r"(r1) : "memory");
  return r0;
}

void tm_semihost_write0(const char* text) { (void)tm_semihost(0x04, text); }

void tm_semihost_exit(int code) {
  /* SYS_EXIT with ADP_Stopped_ApplicationExit (success) or RunTimeErrorUnknown. */
  (void)tm_semihost(0x18, (const void*)(uintptr_t)(code == 0 ? 0x20026 : 0x20024));
}
