//! Admission over the server's devices. Exists so the accounting of who
//! holds how much of which device is one small, testable piece: a client is
//! granted memory on the first device with room, refused when none has
//! any, and its grant is released when its worker is reaped.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::PoolConfig;

/// One client's share of the pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Grant {
    /// Device indices in the pool (distinct).
    pub devices: Vec<u32>,
    /// Bytes reserved on each of them (the worker backend's quota).
    pub bytes: u64,
}

/// One device's state, as `/status` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceUse {
    /// Device index.
    pub index: u32,
    /// Total memory, in bytes.
    pub memory_bytes: u64,
    /// Reserved by admitted clients, in bytes.
    pub reserved_bytes: u64,
    /// Clients admitted on it.
    pub clients: usize,
}

/// The pool: devices and grants keyed by an owner id (the session id).
#[derive(Debug)]
pub struct Pool {
    device_memory_bytes: u64,
    reserved: Vec<u64>,
    grants: BTreeMap<u64, Grant>,
}

impl Pool {
    /// A pool of `cfg.devices` devices of `cfg.device_memory_bytes` each.
    pub fn new(cfg: &PoolConfig) -> Self {
        Self {
            device_memory_bytes: cfg.device_memory_bytes,
            reserved: vec![0; cfg.devices as usize],
            grants: BTreeMap::new(),
        }
    }

    /// Reserves `bytes` on each of `count` distinct devices for `owner`,
    /// first fit, all or nothing; `None` if they do not fit.
    pub fn admit(&mut self, owner: u64, count: u32, bytes: u64) -> Option<Grant> {
        assert!(
            !self.grants.contains_key(&owner),
            "owner {owner} admitted twice"
        );
        let cap = self.device_memory_bytes;
        let devices: Vec<u32> = self
            .reserved
            .iter()
            .enumerate()
            .filter(|(_, used)| cap - **used >= bytes)
            .map(|(i, _)| u32::try_from(i).unwrap_or(u32::MAX))
            .take(count as usize)
            .collect();
        if count == 0 || devices.len() != count as usize {
            return None;
        }
        for &d in &devices {
            let used = &mut self.reserved[d as usize];
            *used += bytes;
            debug_assert!(*used <= cap);
        }
        let grant = Grant { devices, bytes };
        self.grants.insert(owner, grant.clone());
        Some(grant)
    }

    /// Releases `owner`'s grant, if it has one.
    pub fn release(&mut self, owner: u64) -> Option<Grant> {
        let g = self.grants.remove(&owner)?;
        for &d in &g.devices {
            let used = &mut self.reserved[d as usize];
            assert!(*used >= g.bytes, "pool accounting underflow");
            *used -= g.bytes;
        }
        Some(g)
    }

    /// Memory of each device, in bytes.
    pub fn device_memory_bytes(&self) -> u64 {
        self.device_memory_bytes
    }

    /// Total reserved bytes over all devices.
    pub fn reserved_bytes(&self) -> u64 {
        self.reserved.iter().sum()
    }

    /// Per-device use.
    pub fn devices(&self) -> Vec<DeviceUse> {
        self.reserved
            .iter()
            .enumerate()
            .map(|(i, &r)| DeviceUse {
                index: u32::try_from(i).unwrap_or(u32::MAX),
                memory_bytes: self.device_memory_bytes,
                reserved_bytes: r,
                clients: self
                    .grants
                    .values()
                    .filter(|g| g.devices.iter().any(|&d| d as usize == i))
                    .count(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(devices: &[u32], bytes: u64) -> Option<Grant> {
        Some(Grant {
            devices: devices.to_vec(),
            bytes,
        })
    }

    #[test]
    fn fills_devices_in_order_refuses_and_releases() {
        let mut p = Pool::new(&PoolConfig {
            devices: 2,
            device_memory_bytes: 100,
            client_memory_bytes: 60,
        });
        assert_eq!(p.admit(1, 1, 60), g(&[0], 60));
        assert_eq!(p.admit(2, 1, 60), g(&[1], 60));
        assert_eq!(p.admit(3, 1, 60), None, "40 left on each: does not fit");
        assert_eq!(p.admit(3, 2, 40), g(&[0, 1], 40), "both devices, 40 each");
        assert_eq!(p.reserved_bytes(), 200);
        assert_eq!(p.admit(5, 1, 1), None, "full");
        assert_eq!(p.release(1), g(&[0], 60));
        assert_eq!(p.release(1), None);
        assert_eq!(
            p.admit(4, 2, 60),
            None,
            "all or nothing: device 1 has no room"
        );
        assert_eq!(
            p.reserved_bytes(),
            140,
            "a refused request reserves nothing"
        );
        assert_eq!(p.admit(4, 1, 60), g(&[0], 60));
        assert_eq!(p.devices()[1].clients, 2);
        for o in [2, 3, 4] {
            assert!(p.release(o).is_some());
        }
        assert_eq!(p.reserved_bytes(), 0);
        assert!(p.devices().iter().all(|d| d.clients == 0));
        assert_eq!(p.admit(6, 3, 1), None, "more devices than the pool has");
        assert_eq!(p.admit(6, 0, 1), None, "zero devices");
    }
}
