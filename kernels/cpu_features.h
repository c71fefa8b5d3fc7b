/* cpu_features: what the CPU can run, probed once per caller with cpuid.
 *
 * One probe for every fast path (the quant dots and the CPU backend's ops), so they
 * never disagree about whether AVX2 code may run.
 */
#ifndef CV_CPU_FEATURES_H
#define CV_CPU_FEATURES_H

/* 1 when AVX2, FMA and F16C are present and the OS saves the YMM state. Not cached:
 * call it once and keep the answer (cpuid is slow). */
int cv_cpu_has_avx2(void);
/* 1 when, on top of that, AVX-512 F, BW, VL and VNNI are present and the OS saves the
 * ZMM state. Same caveat. */
int cv_cpu_has_avx512vnni(void);

#endif
