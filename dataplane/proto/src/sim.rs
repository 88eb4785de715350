//! Deterministic simulation: an in-memory transport pair with virtual time.
//!
//! Everything random here flows from one seed ([`rand_chacha`]), so any
//! failure replays exactly: [`run_seeds`] prints
//! `reproduce with RGPU_SIM_SEED=<seed>` on failure and, when that variable
//! is set, runs only that seed. [`Net`] injects delay, reordering,
//! re-chunking (split and merge, like TCP) and peer loss; [`Harness`] wires
//! a [`Client`] and a [`Server`] through it and advances virtual time to the
//! next delivery or deadline. [`Gen`] produces random valid field values
//! for property tests. No IO anywhere, so other crates' tests can use it.

use std::collections::VecDeque;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use zerocopy::FromBytes;

use crate::client::{CallId, Client, ClientConfig, ClientEvent};
use crate::cuda::CudaError;
use crate::error::ConnError;
use crate::field::ParamSlot;
use crate::frame::Framing;
use crate::server::{Responder, Server, ServerConfig, ServerEvent};
use crate::time::Timestamp;

/// Environment variable that pins a simulation test to one seed.
pub const SEED_ENV: &str = "RGPU_SIM_SEED";

/// Runs `test` once per seed: `count` seeds derived from `salt`, or only
/// the seed in [`SEED_ENV`] when set. On panic, prints the seed to
/// reproduce with and re-raises.
///
/// # Panics
/// If `test` panics for some seed, or [`SEED_ENV`] is not a `u64`.
pub fn run_seeds(name: &str, salt: u64, count: u64, mut test: impl FnMut(u64)) {
    let pinned = std::env::var(SEED_ENV).ok().map(|s| {
        s.trim()
            .parse::<u64>()
            .unwrap_or_else(|_| panic!("{SEED_ENV}={s} is not a u64"))
    });
    let seeds: Vec<u64> = match pinned {
        Some(s) => vec![s],
        None => (0..count)
            .map(|i| salt.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(i))
            .collect(),
    };
    for seed in seeds {
        if let Err(p) = catch_unwind(AssertUnwindSafe(|| test(seed))) {
            eprintln!("sim test `{name}` failed: reproduce with {SEED_ENV}={seed}");
            resume_unwind(p);
        }
    }
}

/// Runs the handshake between a new client and server directly (no net,
/// no faults) and returns both, open.
///
/// # Panics
/// If the handshake fails (e.g. the tokens differ).
#[must_use]
pub fn connect(ccfg: ClientConfig, scfg: ServerConfig, now: Timestamp) -> (Client, Server) {
    let mut c = Client::new(ccfg, now);
    let mut s = Server::new(scfg, now);
    let mut buf = Vec::new();
    while c.poll_transmit(&mut buf).is_some() {}
    let ok_s = s.handle_input(now, &buf, |_, _| {});
    buf.clear();
    while s.poll_transmit(&mut buf).is_some() {}
    let ok_c = c.handle_input(now, &buf, |_| {});
    assert!(
        ok_s.is_ok() && ok_c.is_ok() && c.is_open() && s.is_open(),
        "sim::connect handshake failed: {ok_s:?} {ok_c:?}"
    );
    (c, s)
}

/// Seeds per test: many in release, fewer in debug builds.
#[must_use]
pub const fn default_seed_count() -> u64 {
    if cfg!(debug_assertions) {
        50
    } else {
        500
    }
}

/// Random valid values for call-table fields, borrowing byte fields from a
/// caller-owned pool so generated calls can borrow like decoded ones.
#[derive(Debug)]
pub struct Gen<'a> {
    rng: ChaCha8Rng,
    pool: &'a [u8],
}

impl<'a> Gen<'a> {
    /// A generator seeded with `seed`, slicing byte fields out of `pool`.
    #[must_use]
    pub fn new(seed: u64, pool: &'a [u8]) -> Self {
        Self {
            rng: ChaCha8Rng::seed_from_u64(seed),
            pool,
        }
    }

    /// A random `u64`, biased toward edge values a quarter of the time.
    pub fn u64(&mut self) -> u64 {
        match self.rng.gen_range(0..8u8) {
            0 => 0,
            1 => u64::MAX,
            _ => self.rng.gen(),
        }
    }

    /// A random sub-slice of the pool of length at most `max` (short
    /// lengths favoured).
    pub fn bytes(&mut self, max: usize) -> &'a [u8] {
        let cap = max.min(self.pool.len());
        let len = if self.rng.gen_bool(0.9) {
            self.rng.gen_range(0..=cap.min(96))
        } else {
            self.rng.gen_range(0..=cap)
        };
        let off = self.rng.gen_range(0..=self.pool.len() - len);
        &self.pool[off..off + len]
    }

    /// A random list of at most `max` parameter slots reinterpreted from
    /// the pool.
    pub fn slots(&mut self, max: usize) -> &'a [ParamSlot] {
        let slot = core::mem::size_of::<ParamSlot>();
        let cap = max.min(self.pool.len() / slot);
        let n = self.rng.gen_range(0..=cap.min(32));
        let off = self.rng.gen_range(0..=self.pool.len() - n * slot);
        // ParamSlot is unaligned and the length is a whole number of slots.
        <[ParamSlot]>::ref_from_bytes(&self.pool[off..off + n * slot]).unwrap_or_default()
    }

    /// The underlying random number generator.
    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

/// Which way a chunk travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// Client to server.
    ToServer,
    /// Server to client.
    ToClient,
}

impl Dir {
    const fn index(self) -> usize {
        match self {
            Dir::ToServer => 0,
            Dir::ToClient => 1,
        }
    }
}

/// Fault injection settings of a [`Net`].
#[derive(Debug, Clone)]
pub struct NetConfig {
    /// Stream: batches are re-chunked at random boundaries and adjacent due
    /// chunks may merge. Message: batches arrive whole.
    pub framing: Framing,
    /// Extra latency per chunk, uniform in `0..=delay_ns_max`.
    pub delay_ns_max: u64,
    /// Base latency per chunk.
    pub delay_ns_min: u64,
    /// Per-mille chance that a chunk overtakes the one queued before it
    /// (breaks ordering; the protocol must detect it).
    pub reorder_per_mille: u32,
    /// Stream framing: largest chunk after splitting.
    pub max_chunk_bytes: usize,
    /// Cut the link after this many chunk deliveries (peer loss).
    pub disconnect_after: Option<u64>,
}

impl Default for NetConfig {
    fn default() -> Self {
        Self {
            framing: Framing::Stream,
            delay_ns_max: 2_000,
            delay_ns_min: 500,
            reorder_per_mille: 0,
            max_chunk_bytes: 1500,
            disconnect_after: None,
        }
    }
}

/// What the net hands to one side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Bytes arrived.
    Data(Vec<u8>),
    /// The link went down (peer loss).
    Eof,
}

/// An in-memory, seeded, fault-injecting transport pair.
#[derive(Debug)]
pub struct Net {
    cfg: NetConfig,
    rng: ChaCha8Rng,
    queues: [VecDeque<(Timestamp, Vec<u8>)>; 2],
    delivered: u64,
    down: bool,
    eof_pending: [bool; 2],
}

impl Net {
    /// A link with fault settings `cfg`, all randomness from `seed`.
    #[must_use]
    pub fn new(cfg: NetConfig, seed: u64) -> Self {
        Self {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed ^ 0x6e65_745f_7365_6564),
            queues: [VecDeque::new(), VecDeque::new()],
            delivered: 0,
            down: false,
            eof_pending: [false; 2],
        }
    }

    /// Whether the link was cut.
    #[must_use]
    pub fn is_down(&self) -> bool {
        self.down
    }

    /// Cuts the link now: queued bytes are lost, both sides get `Eof`.
    pub fn disconnect(&mut self) {
        if !self.down {
            self.down = true;
            self.queues = [VecDeque::new(), VecDeque::new()];
            self.eof_pending = [true; 2];
        }
    }

    /// Sends one batch in direction `dir` at time `now`.
    pub fn send(&mut self, now: Timestamp, dir: Dir, bytes: &[u8]) {
        if self.down || bytes.is_empty() {
            return;
        }
        let mut pieces = Vec::new();
        match self.cfg.framing {
            Framing::Message => pieces.push(bytes.to_vec()),
            Framing::Stream => {
                let mut rest = bytes;
                while !rest.is_empty() {
                    let n = self
                        .rng
                        .gen_range(1..=rest.len().min(self.cfg.max_chunk_bytes.max(1)));
                    pieces.push(rest[..n].to_vec());
                    rest = &rest[n..];
                }
            }
        }
        for p in pieces {
            let delay = self.cfg.delay_ns_min + self.rng.gen_range(0..=self.cfg.delay_ns_max);
            let q = &mut self.queues[dir.index()];
            // FIFO: never deliver before the chunk queued ahead.
            let at = (now + delay).max(q.back().map_or(now, |b| b.0));
            q.push_back((at, p));
            if q.len() >= 2 && self.rng.gen_range(0..1000) < self.cfg.reorder_per_mille {
                let n = q.len();
                q.swap(n - 1, n - 2);
                let t = q[n - 1].0;
                q[n - 2].0 = t.min(q[n - 2].0);
            }
        }
    }

    /// When the next delivery is due, if any.
    #[must_use]
    pub fn next_due(&self) -> Option<Timestamp> {
        if self.eof_pending.iter().any(|&e| e) {
            return Some(Timestamp::ZERO);
        }
        self.queues
            .iter()
            .filter_map(|q| q.front().map(|c| c.0))
            .min()
    }

    /// Pops one delivery due at or before `now` (earliest first).
    pub fn deliver(&mut self, now: Timestamp) -> Option<(Dir, Delivery)> {
        for (i, dir) in [Dir::ToServer, Dir::ToClient].into_iter().enumerate() {
            if self.eof_pending[i] {
                self.eof_pending[i] = false;
                return Some((dir, Delivery::Eof));
            }
        }
        let dir = [Dir::ToServer, Dir::ToClient]
            .into_iter()
            .filter(|d| self.queues[d.index()].front().is_some_and(|c| c.0 <= now))
            .min_by_key(|d| self.queues[d.index()].front().map(|c| c.0))?;
        let q = &mut self.queues[dir.index()];
        let (_, mut bytes) = q.pop_front()?;
        if self.cfg.framing == Framing::Stream {
            // Merge with further due chunks, like TCP coalescing.
            while q.front().is_some_and(|c| c.0 <= now) && self.rng.gen_bool(0.5) {
                if let Some((_, more)) = q.pop_front() {
                    bytes.extend_from_slice(&more);
                }
            }
        }
        self.delivered += 1;
        if self
            .cfg
            .disconnect_after
            .is_some_and(|n| self.delivered > n)
        {
            self.disconnect();
            return self.deliver(now);
        }
        Some((dir, Delivery::Data(bytes)))
    }
}

/// A client-side event with borrowed data copied out, for assertions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientRecord {
    /// Handshake finished.
    HandshakeDone,
    /// A sync call's result: the re-encoded reply body, or the error.
    Reply {
        /// The call.
        id: CallId,
        /// Reply body bytes or CUDA error.
        result: Result<Vec<u8>, CudaError>,
    },
    /// A call aborted by connection failure.
    Aborted {
        /// The call.
        id: CallId,
        /// Why.
        error: ConnError,
    },
    /// The connection closed.
    Closed(ConnError),
}

/// Server application logic plugged into a [`Harness`].
pub type ServerApp = Box<dyn FnMut(Timestamp, ServerEvent<'_>, &mut Responder)>;

/// A piece of a trailer the harness received "directly" (as a driver
/// reading from the transport into the destination would) instead of
/// passing it to `handle_input`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectTrailer {
    /// The call whose trailer it is.
    pub id: CallId,
    /// Trailer bytes that were left before this piece.
    pub remaining_before: u64,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A client and a server connected through a [`Net`] in virtual time.
pub struct Harness {
    /// The client connection.
    pub client: Client,
    /// The server connection.
    pub server: Server,
    /// The link between them.
    pub net: Net,
    /// Virtual now.
    pub now: Timestamp,
    /// Everything the client reported, in order.
    pub client_log: Vec<ClientRecord>,
    /// The server's close reason, once closed.
    pub server_closed: Option<ConnError>,
    /// Payloads of trailing calls, in submission order: when the client
    /// owes a trailer after a batch, the next one is sent right behind it.
    pub trailer_payloads: VecDeque<Vec<u8>>,
    /// When set, trailer bytes at the start of a server-bound chunk are
    /// partly taken past `handle_input` and reported with
    /// `Server::trailer_received` (a random prefix, always leaving the
    /// trailer's last byte to `handle_input` so the app sees it finish).
    pub direct_trailers: bool,
    /// Trailer pieces taken directly (see `direct_trailers`).
    pub direct_log: Vec<DirectTrailer>,
    rng: ChaCha8Rng,
    app: ServerApp,
    buf: Vec<u8>,
}

impl core::fmt::Debug for Harness {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Harness")
            .field("now", &self.now)
            .field("client_log", &self.client_log.len())
            .finish_non_exhaustive()
    }
}

impl Harness {
    /// Wires `client` and `server` through `net`; `app` answers calls.
    #[must_use]
    pub fn new(client: Client, server: Server, net: Net, app: ServerApp) -> Self {
        Self {
            client,
            server,
            net,
            now: Timestamp::ZERO,
            client_log: Vec::new(),
            server_closed: None,
            trailer_payloads: VecDeque::new(),
            direct_trailers: false,
            direct_log: Vec::new(),
            rng: ChaCha8Rng::seed_from_u64(0x0074_7261_696c_6572),
            app,
            buf: Vec::new(),
        }
    }

    /// Sends everything both sides have queued; a batch owing a trailer
    /// goes out with the next payload of `trailer_payloads` behind it.
    ///
    /// # Panics
    /// If a trailer is owed and `trailer_payloads` has no payload of that
    /// length next (a test bug).
    pub fn transmit(&mut self) {
        self.buf.clear();
        while self.client.poll_transmit(&mut self.buf).is_some() {
            if let Some(owed) = self.client.trailer_owed() {
                let payload = self
                    .trailer_payloads
                    .pop_front()
                    .unwrap_or_else(|| panic!("no payload queued for {owed:?}"));
                assert_eq!(payload.len() as u64, owed.len, "payload length");
                self.buf.extend_from_slice(&payload);
                let sent = self.client.trailer_sent(owed.len);
                assert_eq!(sent, Ok(()));
            }
            self.net.send(self.now, Dir::ToServer, &self.buf);
            self.buf.clear();
        }
        while self.server.poll_transmit(&mut self.buf).is_some() {
            self.net.send(self.now, Dir::ToClient, &self.buf);
            self.buf.clear();
        }
    }

    /// One step: transmit, advance virtual time to the next delivery or
    /// deadline, process it. Returns false when nothing is left to happen.
    pub fn step(&mut self) -> bool {
        self.transmit();
        let next = [
            self.net.next_due(),
            self.client.poll_timeout(),
            self.server.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let Some(next) = next else {
            return false;
        };
        self.now = self.now.max(next);
        let now = self.now;
        let log = &mut self.client_log;
        let mut record = |ev: ClientEvent<'_>| log.push(record_of(ev));
        while let Some((dir, d)) = self.net.deliver(now) {
            match (dir, d) {
                (Dir::ToServer, Delivery::Data(b)) => {
                    let rest = if self.direct_trailers {
                        take_direct(
                            &mut self.server,
                            &mut self.rng,
                            &mut self.direct_log,
                            now,
                            &b,
                        )
                    } else {
                        &b
                    };
                    let app = &mut self.app;
                    let _ = self.server.handle_input(now, rest, |ev, r| app(now, ev, r));
                }
                (Dir::ToServer, Delivery::Eof) => {
                    let app = &mut self.app;
                    self.server.handle_close(|ev, r| app(now, ev, r));
                }
                (Dir::ToClient, Delivery::Data(b)) => {
                    let _ = self.client.handle_input(now, &b, &mut record);
                }
                (Dir::ToClient, Delivery::Eof) => self.client.handle_close(&mut record),
            }
        }
        self.client.handle_timeout(now, &mut record);
        let app = &mut self.app;
        self.server.handle_timeout(now, |ev, r| app(now, ev, r));
        if self.server_closed.is_none() {
            self.server_closed = self.server.close_reason();
        }
        true
    }

    /// Steps until `done` holds or nothing is left; at most `max_steps`.
    /// Returns whether `done` held.
    pub fn run_until(&mut self, max_steps: usize, mut done: impl FnMut(&Harness) -> bool) -> bool {
        for _ in 0..max_steps {
            if done(self) {
                return true;
            }
            if !self.step() {
                return done(self);
            }
        }
        done(self)
    }

    /// Runs until the handshake completes (or fails).
    pub fn handshake(&mut self, max_steps: usize) -> bool {
        self.run_until(max_steps, |h| {
            h.client.is_open() || h.client.close_reason().is_some()
        })
    }
}

/// Receives a random prefix of the trailer bytes at the start of `chunk`
/// past `handle_input` (as a driver reading straight into the destination
/// would), logging them; returns the rest. Leaves the trailer's last byte
/// to `handle_input`, so the app sees the trailer finish.
fn take_direct<'c>(
    server: &mut Server,
    rng: &mut ChaCha8Rng,
    log: &mut Vec<DirectTrailer>,
    now: Timestamp,
    chunk: &'c [u8],
) -> &'c [u8] {
    let Some((id, remaining)) = server.trailer_remaining() else {
        return chunk;
    };
    let cap = (remaining - 1).min(chunk.len() as u64) as usize;
    let n = rng.gen_range(0..=cap);
    if n == 0 {
        return chunk;
    }
    let (head, rest) = chunk.split_at(n);
    let ok = server.trailer_received(now, n as u64);
    assert_eq!(ok, Ok(()), "direct trailer bytes accepted");
    log.push(DirectTrailer {
        id,
        remaining_before: remaining,
        bytes: head.to_vec(),
    });
    rest
}

fn record_of(ev: ClientEvent<'_>) -> ClientRecord {
    match ev {
        ClientEvent::HandshakeDone { .. } => ClientRecord::HandshakeDone,
        ClientEvent::Reply { id, result } => ClientRecord::Reply {
            id,
            result: result.map(|r| {
                let mut b = Vec::new();
                r.encode_body(&mut b);
                b
            }),
        },
        ClientEvent::Aborted { id, error } => ClientRecord::Aborted { id, error },
        ClientEvent::Closed { error } => ClientRecord::Closed(error),
    }
}
