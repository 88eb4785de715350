/* Checks that NVIDIA's static CUDA runtime accepts the rgpu shim as its driver.
 * Prints what the runtime returned; run.sh decides pass or fail from the output. */
#include <stdio.h>
#include <cuda_runtime_api.h>

int main(void) {
    /* count starts at 0: the runtime leaves it untouched when driver initialisation fails. */
    int driver = -1, runtime = -1, count = 0;
    cudaError_t e;

    e = cudaDriverGetVersion(&driver);
    printf("cudaDriverGetVersion: %d (%s) version=%d\n", (int)e, cudaGetErrorName(e), driver);
    e = cudaRuntimeGetVersion(&runtime);
    printf("cudaRuntimeGetVersion: %d (%s) version=%d\n", (int)e, cudaGetErrorName(e), runtime);
    e = cudaGetDeviceCount(&count);
    printf("cudaGetDeviceCount: %d (%s) count=%d\n", (int)e, cudaGetErrorName(e), count);
    printf("cudaGetErrorString: %s\n", cudaGetErrorString(e));
    /* A second call must give the same, sticky answer and not crash. */
    e = cudaGetDeviceCount(&count);
    printf("cudaGetDeviceCount again: %d (%s) count=%d\n", (int)e, cudaGetErrorName(e), count);
    void *p = NULL;
    e = cudaMalloc(&p, 1024);
    printf("cudaMalloc: %d (%s)\n", (int)e, cudaGetErrorName(e));
    printf("done\n");
    return 0;
}
