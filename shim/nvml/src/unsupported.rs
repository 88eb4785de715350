//! NVML entry points rgpu exports but does not answer: each returns
//! `NVML_ERROR_NOT_SUPPORTED` and logs its name once.
//!
//! They are exported so that programs which resolve them up front keep working: PyTorch's
//! c10 (`c10/cuda/driver_api.h`) `dlsym`s the NvLink queries and refuses to start its driver
//! API table without them, and `pynvml`-based monitors treat "Not Supported" as a normal
//! answer for temperature, power, clocks and fans. A symbol that is not exported at all is
//! reported by the caller's `dlsym` as missing (`NVML_ERROR_FUNCTION_NOT_FOUND` in `pynvml`).
//!
//! The stubs ignore their arguments and write nothing. That is sound on the x86-64 and
//! AArch64 SysV ABIs, where the caller owns argument registers and stack; other targets fail
//! to compile.

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the argument-ignoring NVML stubs are only proven sound for x86-64 and AArch64");

use crate::guard::{guard, once_per_name};
use crate::types::{NvmlReturn, NVML_ERROR_NOT_SUPPORTED};

/// The stub body: log once, answer "not supported".
fn unsupported(name: &'static str) -> NvmlReturn {
    guard(name, || {
        if once_per_name(name) {
            tracing::warn!(
                entry = name,
                "rgpu nvml: not supported, answering NVML_ERROR_NOT_SUPPORTED"
            );
        }
        Err(NVML_ERROR_NOT_SUPPORTED)
    })
}

macro_rules! not_supported {
    ($($name:ident),* $(,)?) => {
        $(
            #[doc = concat!("`", stringify!($name), "`: not supported by rgpu (see the module docs).")]
            #[no_mangle]
            pub extern "C" fn $name() -> NvmlReturn {
                unsupported(stringify!($name))
            }
        )*
        /// Every stubbed name, for tests and docs.
        pub const STUBBED: &[&str] = &[$(stringify!($name)),*];
    };
}

not_supported!(
    // PyTorch c10's required NVML table, besides the ones answered in `api`.
    nvmlDeviceGetNvLinkRemoteDeviceType,
    nvmlDeviceGetNvLinkRemotePciInfo_v2,
    nvmlDeviceGetNvLinkState,
    nvmlDeviceGetGpuFabricInfo,
    nvmlDeviceGetGpuFabricInfoV,
    nvmlDeviceGetP2PStatus,
    nvmlDeviceGetTopologyCommonAncestor,
    // Monitoring (torch.cuda.temperature / power_draw / clock_rate, nvitop, gpustat, DCGM-style
    // exporters).
    nvmlDeviceGetTemperature,
    nvmlDeviceGetPowerUsage,
    nvmlDeviceGetTotalEnergyConsumption,
    nvmlDeviceGetPowerManagementLimit,
    nvmlDeviceGetEnforcedPowerLimit,
    nvmlDeviceGetClockInfo,
    nvmlDeviceGetMaxClockInfo,
    nvmlDeviceGetFanSpeed,
    nvmlDeviceGetPerformanceState,
    nvmlDeviceGetCurrentClocksThrottleReasons,
    nvmlDeviceGetCurrentClocksEventReasons,
    nvmlDeviceGetProcessUtilization,
    nvmlDeviceGetEncoderUtilization,
    nvmlDeviceGetDecoderUtilization,
    nvmlDeviceGetGraphicsRunningProcesses,
    nvmlDeviceGetGraphicsRunningProcesses_v2,
    nvmlDeviceGetGraphicsRunningProcesses_v3,
    nvmlDeviceGetMPSComputeRunningProcesses,
    nvmlDeviceGetMPSComputeRunningProcesses_v2,
    nvmlDeviceGetMPSComputeRunningProcesses_v3,
    nvmlDeviceGetBAR1MemoryInfo,
    nvmlDeviceGetPcieThroughput,
    nvmlDeviceGetCurrPcieLinkGeneration,
    nvmlDeviceGetCurrPcieLinkWidth,
    // Identity and modes a remote share cannot describe.
    nvmlDeviceGetPciInfo,
    nvmlDeviceGetSerial,
    nvmlDeviceGetBoardPartNumber,
    nvmlDeviceGetVbiosVersion,
    nvmlDeviceGetMinorNumber,
    nvmlDeviceGetBrand,
    nvmlDeviceGetArchitecture,
    nvmlDeviceGetNumGpuCores,
    nvmlDeviceGetMemoryBusWidth,
    nvmlDeviceGetEccMode,
    nvmlDeviceGetComputeMode,
    nvmlDeviceGetPersistenceMode,
    nvmlDeviceGetMigMode,
    nvmlDeviceGetCpuAffinity,
    nvmlDeviceGetSupportedEventTypes,
    nvmlSystemGetNVMLVersion,
    nvmlSystemGetProcessName,
    nvmlEventSetCreate,
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stubs_answer_not_supported_and_names_are_unique() {
        assert_eq!(nvmlDeviceGetTemperature(), NVML_ERROR_NOT_SUPPORTED);
        assert_eq!(
            nvmlDeviceGetNvLinkRemoteDeviceType(),
            NVML_ERROR_NOT_SUPPORTED
        );
        let mut names = STUBBED.to_vec();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), STUBBED.len());
    }
}
