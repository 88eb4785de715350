"""NVIDIA's own Python NVML bindings (PyPI nvidia-ml-py, module pynvml) against rgpu's
libnvidia-ml.so.1, run through `rgpu run` by remote.sh: what monitoring tools built on pynvml
see. Prints "ok NAME" or "FAIL NAME: why" per check and "done".

    python3 pynvml_check.py QUOTA_BYTES
"""
import os
import sys

import pynvml

failures = 0


def check(ok, name, why=""):
    global failures
    if ok:
        print(f"ok {name}")
    else:
        failures += 1
        print(f"FAIL {name}: {why}")


quota = int(sys.argv[1])
pynvml.nvmlInit()
count = pynvml.nvmlDeviceGetCount()
check(count == 1, "py_count", count)
handle = pynvml.nvmlDeviceGetHandleByIndex(0)
name = pynvml.nvmlDeviceGetName(handle)
name = name.decode() if isinstance(name, bytes) else name
check("emulated" in name, "py_name", name)
mem = pynvml.nvmlDeviceGetMemoryInfo(handle)
check(mem.total == quota and mem.free + mem.used == mem.total, "py_memory", (mem.total, mem.free, mem.used))
uuid = pynvml.nvmlDeviceGetUUID(handle)
uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
check(uuid.startswith("GPU-") and len(uuid) == 40, "py_uuid", uuid)
major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(handle)
check(major > 0, "py_compute_capability", (major, minor))
pci = pynvml.nvmlDeviceGetPciInfo(handle)
check(pynvml.nvmlDeviceGetHandleByPciBusId(pci.busId) is not None, "py_pci", pci.busId)
procs = pynvml.nvmlDeviceGetComputeRunningProcesses(handle)
check(len(procs) == 1 and procs[0].pid == os.getpid(), "py_processes", [(p.pid, p.usedGpuMemory) for p in procs])
util = pynvml.nvmlDeviceGetUtilizationRates(handle)
check(0 <= util.gpu <= 100 and util.memory == 0, "py_utilization", (util.gpu, util.memory))
try:
    pynvml.nvmlDeviceGetTemperature(handle, pynvml.NVML_TEMPERATURE_GPU)
    check(False, "py_temperature_not_supported", "no error")
except pynvml.NVMLError as e:
    check(e.value == pynvml.NVML_ERROR_NOT_SUPPORTED, "py_temperature_not_supported", e)
print(f"pynvml: {count} device(s): {name}, {uuid}, {mem.total >> 20} MiB total, pci {pci.busId}, "
      f"cc {major}.{minor}, utilization {util.gpu}%, driver {pynvml.nvmlSystemGetDriverVersion()}")
pynvml.nvmlShutdown()
print("done")
sys.exit(1 if failures else 0)
