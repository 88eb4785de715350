//! The daemon's shared state: live clients, the pool and running totals,
//! with the Prometheus metrics recorded at the same places. Exists so the
//! accept loop, the reaper threads and the HTTP endpoint see one
//! consistent picture behind one lock (held only for bookkeeping).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use metrics::{counter, gauge};
use serde::Serialize;

use crate::config::PoolConfig;
use crate::listen::Scheme;
use crate::pool::{DeviceUse, Grant, Pool};
use crate::report::WorkerReport;
use crate::shareboard::{Boards, BOARD_DEVICES_MAX};

/// One live client (one worker process).
#[derive(Debug, Clone, Serialize)]
pub struct ClientInfo {
    /// Session id (daemon-wide, never reused).
    pub session: u64,
    /// The worker process.
    pub worker_pid: u32,
    /// Its transport.
    pub transport: Scheme,
    /// Who connected.
    pub peer: String,
    /// Where it is: `authenticating` (no call yet), `admitted`, `refused`.
    pub phase: Phase,
    /// Its admitted share (`None` until admitted, or when refused).
    pub grant: Option<Grant>,
    /// When it connected, in seconds since the Unix epoch.
    pub since_unix_s: u64,
}

/// A client's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Connected; no call yet (handshake in progress or just finished).
    Authenticating,
    /// Holds a share of the pool.
    Admitted,
    /// The pool could not fit it.
    Refused,
}

/// Running totals since the daemon started.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Totals {
    /// Connections accepted.
    pub connections: u64,
    /// Connections closed at once because `workers_max` workers were live
    /// or `pending_auth_max` were still authenticating.
    pub connections_rejected: u64,
    /// Clients the pool could not fit.
    pub admission_refusals: u64,
    /// Clients that failed the token check or the handshake deadline.
    pub auth_failures: u64,
    /// Workers killed by a signal or exiting with an unexpected code.
    pub worker_crashes: u64,
    /// Sessions ended by a client's protocol violation.
    pub protocol_errors: u64,
    /// Workers that ended.
    pub sessions_ended: u64,
    /// Sessions that created a GPU backend.
    pub backends_created: u64,
    /// Sync calls answered (reported at worker exit).
    pub sync_calls: u64,
    /// Async calls executed (reported at worker exit).
    pub async_calls: u64,
    /// Failed calls (reported at worker exit).
    pub failed_calls: u64,
    /// Host-to-device bytes (reported at worker exit).
    pub bytes_h2d: u64,
    /// Device-to-host bytes (reported at worker exit).
    pub bytes_d2h: u64,
}

/// What `/status` serves.
#[derive(Debug, Clone, Serialize)]
pub struct StatusDoc {
    /// The backend workers run.
    pub backend: String,
    /// Devices and their reservations.
    pub devices: Vec<DeviceUse>,
    /// Live clients.
    pub clients: Vec<ClientInfo>,
    /// Compute share of each admitted client on each of its devices
    /// (empty when the daemon runs without share boards).
    pub compute: Vec<ComputeUse>,
    /// Live usage of each admitted client on each of its devices, read
    /// from its share-board slot (empty without share boards).
    pub usage: Vec<ClientUsage>,
    /// Totals.
    pub totals: Totals,
}

/// One live client's usage on one device while it runs: what its worker
/// counts in its share-board slot (see `docs/worker.md`, "Live metrics").
#[derive(Debug, Clone, Serialize)]
pub struct ClientUsage {
    /// Session id.
    pub session: u64,
    /// Its worker process.
    pub worker_pid: u32,
    /// Device index.
    pub device: u32,
    /// Backend operations by kind (`device`, `memory`, `copy`, `memset`,
    /// `module`, `launch`, `stream`, `event`).
    pub calls: BTreeMap<&'static str, u64>,
    /// Host-to-device bytes.
    pub bytes_h2d: u64,
    /// Device-to-host bytes.
    pub bytes_d2h: u64,
    /// Device-to-device bytes.
    pub bytes_d2d: u64,
    /// Device memory it holds against its quota, in bytes.
    pub memory_bytes: u64,
    /// Kernel time it consumed, in ns.
    pub kernel_ns: u64,
}

/// One admitted client's compute share on one device, from the share
/// board (see `docs/worker.md`, "Compute share").
#[derive(Debug, Clone, Serialize)]
pub struct ComputeUse {
    /// Session id.
    pub session: u64,
    /// Device index.
    pub device: u32,
    /// Its share of the device, in thousandths.
    pub share_milli: u32,
    /// Kernel time it consumed since admission, in ns.
    pub kernel_ns: u64,
    /// Its part of the kernel time live clients consumed on the device
    /// (0..=1, since their admission).
    pub share_used: f64,
    /// Launches that waited for tokens (throttled).
    pub throttle_waits: u64,
}

/// How a worker process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerExit {
    /// Exit code.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

struct Inner {
    pool: Pool,
    clients: BTreeMap<u64, ClientInfo>,
    totals: Totals,
    /// Per device board: kernel ns of reaped clients, in all (device
    /// utilization keeps their time after their slot is freed).
    retired_kernel_ns: Vec<u64>,
}

/// The shared state.
pub struct State {
    backend: String,
    capacity_bytes: u64,
    /// The per-device compute-share boards (`None`: no compute share).
    boards: Option<Boards>,
    inner: Mutex<Inner>,
}

impl State {
    /// A state with an empty pool.
    pub fn new(backend: &str, pool: &PoolConfig) -> Self {
        let capacity_bytes = pool
            .device_memory_bytes
            .saturating_mul(u64::from(pool.devices));
        gauge!("rgpu_pool_capacity_bytes").set(capacity_bytes as f64);
        gauge!("rgpu_pool_reserved_bytes").set(0.0);
        gauge!("rgpu_clients").set(0.0);
        let devices = pool.devices as usize;
        let boards = if (1..=BOARD_DEVICES_MAX).contains(&devices) {
            Boards::create(devices)
                .inspect_err(|e| {
                    tracing::warn!(error = %e, "running without compute share: launches are not throttled");
                })
                .ok()
        } else {
            tracing::warn!(devices, "no compute share boards for this many devices");
            None
        };
        let board_devices = boards.as_ref().map_or(0, Boards::devices);
        Self {
            backend: backend.to_string(),
            capacity_bytes,
            boards,
            inner: Mutex::new(Inner {
                pool: Pool::new(pool),
                clients: BTreeMap::new(),
                totals: Totals::default(),
                retired_kernel_ns: vec![0; board_devices],
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves plain counters behind; they
        // stay usable, so a poisoned lock is taken over.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Live clients.
    pub fn live(&self) -> usize {
        self.lock().clients.len()
    }

    /// Counts an accepted connection.
    pub fn connection(&self, scheme: Scheme) {
        self.lock().totals.connections += 1;
        counter!("rgpu_connections_total", "transport" => scheme.name()).increment(1);
    }

    /// Counts a connection closed because too many workers are live.
    pub fn rejected(&self) {
        self.lock().totals.connections_rejected += 1;
        counter!("rgpu_connections_rejected_total").increment(1);
    }

    /// The pool's configuration-independent view: device memory, for
    /// resolving fractional requests.
    pub fn device_memory_bytes(&self) -> u64 {
        self.lock().pool.device_memory_bytes()
    }

    /// The share boards' fd, for workers to inherit (`None`: no compute
    /// share).
    pub fn share_fd(&self) -> Option<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        self.boards.as_ref().map(|b| b.fd().as_raw_fd())
    }

    /// Live clients still authenticating (no call yet).
    pub fn pending(&self) -> usize {
        self.lock()
            .clients
            .values()
            .filter(|c| c.phase == Phase::Authenticating)
            .count()
    }

    /// Admits `session` for `bytes` on each of `count` devices; `None`
    /// (counted) if it does not fit. A session not registered or already
    /// admitted is refused.
    pub fn admit(&self, session: u64, count: u32, bytes: u64) -> Option<Grant> {
        let mut g = self.lock();
        let open = g
            .clients
            .get(&session)
            .is_some_and(|c| c.phase != Phase::Admitted);
        let grant = if open {
            g.pool.admit(session, count, bytes)
        } else {
            None
        };
        if let Some(c) = g.clients.get_mut(&session) {
            c.grant.clone_from(&grant);
            c.phase = if grant.is_some() {
                Phase::Admitted
            } else {
                Phase::Refused
            };
        }
        if let (Some(grant), Some(boards)) = (&grant, &self.boards) {
            let device_bytes = g.pool.device_memory_bytes().max(1);
            let share_milli =
                u32::try_from(u128::from(grant.bytes) * 1000 / u128::from(device_bytes))
                    .unwrap_or(1000);
            for &d in &grant.devices {
                let claimed = boards
                    .board(d as usize)
                    .and_then(|b| b.claim(session, share_milli));
                if claimed.is_none() {
                    tracing::warn!(
                        session,
                        device = d,
                        "compute share board full: client runs unthrottled"
                    );
                }
            }
        }
        if grant.is_none() {
            g.totals.admission_refusals += 1;
            counter!("rgpu_admission_refusals_total").increment(1);
        }
        gauge!("rgpu_pool_reserved_bytes").set(g.pool.reserved_bytes() as f64);
        grant
    }

    /// Records a spawned worker.
    pub fn register(&self, info: ClientInfo) {
        let mut g = self.lock();
        g.clients.insert(info.session, info);
        gauge!("rgpu_clients").set(g.clients.len() as f64);
    }

    /// Worker pids of live clients (for the drain's last resort).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.lock().clients.values().map(|c| c.worker_pid).collect()
    }

    /// Accounts for a reaped worker: releases its grant, adds its report to
    /// the totals, counts auth failures and crashes.
    pub fn finish(&self, session: u64, exit: WorkerExit, report: Option<&WorkerReport>) {
        let mut g = self.lock();
        let info = g.clients.remove(&session);
        g.pool.release(session);
        for (device, board) in self.boards.iter().flat_map(Boards::iter).enumerate() {
            if let Some(u) = board.snapshot().into_iter().find(|u| u.owner == session) {
                counter!("rgpu_compute_throttle_waits_total").increment(u.waits);
                counter!("rgpu_compute_kernel_ns_total").increment(u.used_ns);
                if let Some(r) = g.retired_kernel_ns.get_mut(device) {
                    *r = r.saturating_add(u.used_ns);
                }
            }
            board.release(session);
        }
        let t = &mut g.totals;
        t.sessions_ended += 1;
        match exit {
            WorkerExit::Code(crate::report::EXIT_AUTH_FAILED) => {
                t.auth_failures += 1;
                counter!("rgpu_auth_failures_total").increment(1);
            }
            WorkerExit::Code(crate::report::EXIT_OK) => {}
            WorkerExit::Code(_) | WorkerExit::Signal(_) => {
                t.worker_crashes += 1;
                counter!("rgpu_worker_crashes_total").increment(1);
            }
        }
        if let Some(r) = report {
            t.backends_created += u64::from(r.backend_created);
            t.protocol_errors += u64::from(r.protocol_error);
            counter!("rgpu_protocol_errors_total").increment(u64::from(r.protocol_error));
            t.sync_calls += r.sync_calls;
            t.async_calls += r.async_calls;
            t.failed_calls += r.failed_calls;
            t.bytes_h2d += r.bytes_h2d;
            t.bytes_d2h += r.bytes_d2h;
            counter!("rgpu_backends_created_total").increment(u64::from(r.backend_created));
            counter!("rgpu_calls_total", "kind" => "sync").increment(r.sync_calls);
            counter!("rgpu_calls_total", "kind" => "async").increment(r.async_calls);
            counter!("rgpu_call_errors_total").increment(r.failed_calls);
            counter!("rgpu_bytes_total", "direction" => "h2d").increment(r.bytes_h2d);
            counter!("rgpu_bytes_total", "direction" => "d2h").increment(r.bytes_d2h);
        }
        gauge!("rgpu_clients").set(g.clients.len() as f64);
        gauge!("rgpu_pool_reserved_bytes").set(g.pool.reserved_bytes() as f64);
        let reserved = g.pool.reserved_bytes();
        assert!(reserved <= self.capacity_bytes, "pool over capacity");
        drop(g);
        tracing::info!(
            session,
            worker_pid = info.as_ref().map(|i| i.worker_pid),
            ?exit,
            report = ?report,
            "rgpu worker reaped; its pool share is released"
        );
    }

    /// Every claimed slot of every board, with its part of the device's
    /// kernel time.
    fn compute(&self) -> Vec<ComputeUse> {
        let mut out = Vec::new();
        for (device, board) in self.boards.iter().flat_map(|b| b.iter().enumerate()) {
            let slots = board.snapshot();
            let total: u64 = slots.iter().map(|u| u.used_ns).sum();
            out.extend(slots.iter().map(|u| ComputeUse {
                session: u.owner,
                device: u32::try_from(device).unwrap_or(u32::MAX),
                share_milli: u.share_milli,
                kernel_ns: u.used_ns,
                share_used: if total == 0 {
                    0.0
                } else {
                    u.used_ns as f64 / total as f64
                },
                throttle_waits: u.waits,
            }));
        }
        out
    }

    /// Each device's kernel time per board slot now, in device order, for
    /// device utilization on `/metrics` (empty without share boards).
    /// Taken under the lock `finish` frees slots under, so a reaped
    /// client's time is in its slot or in the retired sum, never both.
    pub fn device_tallies(&self) -> Vec<rgpu_gpu_worker::share::Tally> {
        let g = self.lock();
        self.boards
            .iter()
            .flat_map(Boards::iter)
            .enumerate()
            .map(|(device, board)| {
                let retired = g.retired_kernel_ns.get(device).copied().unwrap_or(0);
                rgpu_gpu_worker::share::Tally::of_board(board).with_retired(retired)
            })
            .collect()
    }

    /// Live usage of admitted clients, for `/metrics`.
    pub fn usage(&self) -> Vec<ClientUsage> {
        let g = self.lock();
        self.usage_of(&g.clients)
    }

    /// Every claimed board slot whose owner is a live client, with that
    /// client's worker pid (bounded: one entry per slot).
    fn usage_of(&self, clients: &BTreeMap<u64, ClientInfo>) -> Vec<ClientUsage> {
        use rgpu_gpu_worker::share::CallKind;
        let mut out = Vec::new();
        for (device, board) in self.boards.iter().flat_map(|b| b.iter().enumerate()) {
            for u in board.snapshot() {
                let Some(c) = clients.get(&u.owner) else {
                    continue;
                };
                out.push(ClientUsage {
                    session: u.owner,
                    worker_pid: c.worker_pid,
                    device: u32::try_from(device).unwrap_or(u32::MAX),
                    calls: CallKind::ALL
                        .iter()
                        .map(|k| (k.name(), u.usage.calls[*k as usize]))
                        .collect(),
                    bytes_h2d: u.usage.bytes_h2d,
                    bytes_d2h: u.usage.bytes_d2h,
                    bytes_d2d: u.usage.bytes_d2d,
                    memory_bytes: u.usage.memory_bytes,
                    kernel_ns: u.used_ns,
                });
            }
        }
        out
    }

    /// A snapshot for `/status`.
    pub fn status(&self) -> StatusDoc {
        let g = self.lock();
        StatusDoc {
            backend: self.backend.clone(),
            devices: g.pool.devices(),
            clients: g.clients.values().cloned().collect(),
            compute: self.compute(),
            usage: self.usage_of(&g.clients),
            totals: g.totals.clone(),
        }
    }
}
