// Allocation variants through the shim and the worker: cudaMallocPitch, the stream-ordered
// allocator (cudaMallocAsync, cudaFreeAsync, the default pool), each charged to the quota
// the client was granted (argv[1] bytes) and refused over it; frees return the quota; a bad
// stream-ordered free is the stream's error. Prints "ok NAME" per check, then "done".
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

static int failed;
#define CHECK(name, cond)                                                        \
  do {                                                                           \
    if (cond) {                                                                  \
      printf("ok %s\n", name);                                                   \
    } else {                                                                     \
      printf("FAIL %s (line %d, last error %d)\n", name, __LINE__, (int)err);    \
      failed = 1;                                                                \
    }                                                                            \
  } while (0)

static size_t used(void) {
  size_t free_b = 0, total = 0;
  if (cudaMemGetInfo(&free_b, &total) != cudaSuccess) return (size_t)-1;
  return total - free_b;
}

int main(int argc, char **argv) {
  if (argc < 2) { fprintf(stderr, "usage: alloc_ext QUOTA_BYTES\n"); return 2; }
  size_t quota = strtoull(argv[1], NULL, 10);
  cudaError_t err = cudaSetDevice(0);
  size_t base = used();
  CHECK("start", err == cudaSuccess && base == 0);

  void *p = NULL;
  size_t pitch = 0;
  err = cudaMallocPitch(&p, &pitch, 1000, 4);
  CHECK("pitch", err == cudaSuccess && p && pitch >= 1000 && pitch % 512 == 0);
  size_t pitched = pitch * 4;
  CHECK("pitch_charged", used() == pitched);
  void *q = NULL;
  err = cudaMallocPitch(&q, &pitch, 1 << 20, quota >> 20);
  CHECK("pitch_over_quota", err == cudaErrorMemoryAllocation);
  cudaGetLastError();

  int pools = 0;
  cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, 0);
  CHECK("pools_supported", pools == 1);
  cudaStream_t s;
  err = cudaStreamCreate(&s);
  void *a = NULL, *b = NULL, *c = NULL;
  err = cudaMallocAsync(&a, quota / 2, s);
  CHECK("malloc_async", err == cudaSuccess && a);
  CHECK("async_charged", used() == pitched + quota / 2);
  err = cudaMallocAsync(&b, quota / 2, s);
  CHECK("malloc_async_over_quota", err == cudaErrorMemoryAllocation);
  cudaGetLastError();
  cudaMemPool_t pool;
  err = cudaDeviceGetDefaultMemPool(&pool, 0);
  CHECK("default_pool", err == cudaSuccess);
  err = cudaMallocFromPoolAsync(&c, 4096, pool, s);
  CHECK("malloc_from_pool", err == cudaSuccess && c);
  err = cudaMemsetAsync(a, 0x5a, 4096, s);
  unsigned char back[4096];
  if (err == cudaSuccess) err = cudaMemcpyAsync(back, a, sizeof back, cudaMemcpyDeviceToHost, s);
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  CHECK("async_memory_usable", err == cudaSuccess && back[0] == 0x5a && back[4095] == 0x5a);
  err = cudaFreeAsync(a, s);
  CHECK("free_async", err == cudaSuccess);
  err = cudaFreeAsync(c, s);
  if (err == cudaSuccess) err = cudaStreamSynchronize(s);
  CHECK("returned", err == cudaSuccess && used() == pitched);
  err = cudaFreeAsync(a, s);
  cudaError_t later = cudaStreamSynchronize(s);
  CHECK("bad_free_async", err != cudaSuccess || later != cudaSuccess);
  cudaGetLastError();
  err = cudaFree(p);
  CHECK("free_pitch", err == cudaSuccess && used() == 0);
  cudaStreamDestroy(s);
  printf("%s\n", failed ? "FAILED" : "done");
  return failed;
}
