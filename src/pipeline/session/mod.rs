//! Stage 5: mirror sessions. A session is (outer source address, VNI): in
//! AWS the source is the mirrored ENI's primary address and the VNI the
//! session's `VirtualNetworkId`. Two sessions from different sources may
//! share a VNI, so both are in the key.
//!
//! In: a decoded inner frame and the session key. Out: the frame in the
//! session's current capture file (opened, rotated and closed here, per the
//! `[output]` rules), and per-session counters for the summary.
//! Dropped and counted: frames the writer could not take (`write_backlog`;
//! `write_error` and `disk_full` are counted by the writer thread), a new
//! session when the table is full and no session may be evicted
//! (`session_limit`), a frame that needs a file when every file slot is
//! taken and no session may be evicted (`open_file_limit`). State is
//! created per session, never per packet.
//!
//! The table is bounded and a flood cannot lock real sessions out:
//! - A session with no datagram for `idle_timeout` is freed: its file
//!   closed, its counters added to the totals of freed sessions (the
//!   summary's last line, `vni="other"` in `/metrics`), its slot reusable.
//!   Until the slot is reused (oldest freed first) the session coming back
//!   keeps its `{seq}` numbering.
//! - When `max_sessions` (per worker) or `max_open_files` (all workers) is
//!   reached, the least recently active session is evicted (freed and
//!   counted) to make room, provided it has been silent for at least
//!   [`EVICT_MIN_IDLE_NS`]: when every session is busy the new one is
//!   refused as before, rather than sessions evicting each other packet by
//!   packet. Sessions named in `[[session]]` or in `vnis` are never
//!   evicted. A worker evicts only its own sessions (for a file slot: one
//!   of its sessions that has a file open).
//!
//! Least recently active is kept in O(1) per datagram without allocation:
//! doubly linked lists threaded through the slots ([`super::lru`]; a
//! session moves to the front when seen, eviction takes the tail). A
//! session's own state is in [`state`]; its files (open, rotate, close) in
//! [`files`].

use std::sync::Arc;

use crate::config::OutputConfig;
use crate::output::handle::Output;
use crate::telemetry::counters::Counters;
use crate::telemetry::summary::SessionSummary;

use super::lru::{Link, List, NIL};

mod files;
mod state;

pub use state::{Session, SessionKey, SessionSettings};

/// A session silent for at least this long (1 s) may be evicted to make
/// room; a busier one is not (see the module documentation).
pub const EVICT_MIN_IDLE_NS: u64 = 1_000_000_000;
/// A session seen again moves to the front of the recency lists at most
/// this often.
const MOVE_EVERY_NS: u64 = 100_000_000;
/// Sessions found busy at the tail of a list (seen since they last moved)
/// that eviction moves to the front before it gives up.
const EVICT_TRIES: usize = 16;

/// New sessions logged at info level per worker.
const LOGGED_SESSIONS: u64 = 64;

/// Why a session's entry is freed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Freed {
    Idle,
    Evicted,
}

/// The sessions of one worker, and the files they write.
pub struct SessionTable {
    /// Session slots by key. foldhash's fast hasher, seeded per process:
    /// std's SipHash cost 6 % of a replay where sessions interleave packet
    /// by packet, and the keys (outer source, VNI) are partly chosen by
    /// senders, so an unseeded hash (rustc-hash) is not used.
    index: foldhash::HashMap<SessionKey, usize>,
    /// Slots: live sessions, and freed ones kept for their key and `seq`
    /// until the slot is reused.
    sessions: Vec<Session>,
    /// Links of `recent` and `freed` (a slot is in at most one of them).
    links: Vec<Link>,
    /// Live sessions that may be evicted, most recently seen first.
    recent: List,
    /// Freed slots, most recently freed first: reused from the tail.
    freed: List,
    /// Links of `open`.
    open_links: Vec<Link>,
    /// The sessions of `recent` that have a file open, most recently seen
    /// first: evicted when `max_open_files` is reached.
    open: List,
    /// Live sessions, and entries made so far (for logging).
    live: usize,
    made: u64,
    /// The last key looked up: mirrored traffic comes in runs of one
    /// session. Always at the front of its lists.
    last: Option<(SessionKey, usize)>,
    /// Ids of the sessions freed since the owner last took them (only when
    /// `track_released`: the flow table wants them).
    released: Vec<u64>,
    track_released: bool,
    /// Files this table (worker) has open: with several workers each may
    /// hold at most its share of `max_open_files` (see [`SessionTable::write`]).
    files_open: usize,
    /// Tables (workers) sharing `max_open_files`: each sibling adds one.
    workers: Arc<std::sync::atomic::AtomicUsize>,
    output: Output,
    counters: Arc<Counters>,
}

impl SessionTable {
    /// A table for a worker of another socket group (`geneve_listen`
    /// beside `listen`), writing through the same writer thread: the
    /// workers of a group share `max_open_files` among themselves (the
    /// global cap still holds for all), so a group that gets no traffic
    /// holds no slot another group could use.
    pub fn sibling_group(&self) -> SessionTable {
        let mut t = SessionTable::new(self.output.sibling(), self.counters.clone());
        t.track_released = self.track_released;
        t
    }

    /// A table for another worker, writing through the same writer thread.
    pub fn sibling(&self) -> SessionTable {
        let mut t = SessionTable::new(self.output.sibling(), self.counters.clone());
        t.track_released = self.track_released;
        self.workers
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        t.workers = self.workers.clone();
        t
    }

    /// `[output.s3]`: the writer hands closed files to `u`.
    pub fn set_uploads(&mut self, u: Arc<crate::output::upload::Uploads>) {
        self.output.set_uploads(u);
    }

    pub fn new(output: Output, counters: Arc<Counters>) -> SessionTable {
        SessionTable {
            index: Default::default(),
            sessions: Vec::new(),
            links: Vec::new(),
            recent: List::EMPTY,
            freed: List::EMPTY,
            open_links: Vec::new(),
            open: List::EMPTY,
            live: 0,
            made: 0,
            last: None,
            released: Vec::new(),
            track_released: false,
            files_open: 0,
            workers: Arc::new(std::sync::atomic::AtomicUsize::new(1)),
            output,
            counters,
        }
    }

    /// Keeps the ids of freed sessions for [`SessionTable::take_released`].
    pub fn track_released(&mut self, on: bool) {
        self.track_released = on;
        self.released.clear();
    }

    /// Whether sessions were freed since the last [`SessionTable::take_released`].
    #[inline]
    pub fn has_released(&self) -> bool {
        !self.released.is_empty()
    }

    /// The ids of the sessions freed since the last call.
    #[inline]
    pub fn take_released(&mut self) -> std::vec::Drain<'_, u64> {
        self.released.drain(..)
    }

    /// The slot of the session for `key`, seen at `now_ns`; when new (or
    /// freed), it is made with the settings `config` gives, evicting the
    /// least recently active session when `max_sessions` are live. `None`
    /// when the table is full and no session may be evicted.
    #[inline]
    pub fn lookup(
        &mut self,
        key: SessionKey,
        now_ns: u64,
        max_sessions: usize,
        config: impl FnOnce() -> SessionSettings,
    ) -> Option<usize> {
        if let Some((k, i)) = self.last
            && k == key
        {
            let s = &mut self.sessions[i];
            s.seen_ns = s.seen_ns.max(now_ns);
            return Some(i);
        }
        let found = self.index.get(&key).copied();
        let i = match found {
            Some(i) if self.sessions[i].live => {
                self.touch(i, now_ns);
                i
            }
            _ => self.make(key, found, now_ns, max_sessions, config)?,
        };
        self.last = Some((key, i));
        Some(i)
    }

    /// Marks session `i` seen at `now_ns`: to the front of its lists.
    #[inline]
    fn touch(&mut self, i: usize, now_ns: u64) {
        let s = &mut self.sessions[i];
        s.seen_ns = s.seen_ns.max(now_ns);
        if !s.protected && now_ns >= s.moved_ns.saturating_add(MOVE_EVERY_NS) {
            s.moved_ns = now_ns;
            let has_file = s.file.is_some();
            self.recent.move_to_front(&mut self.links, i);
            if has_file {
                self.open.move_to_front(&mut self.open_links, i);
            }
        }
    }

    /// Makes the session for `key` live: in its old slot when it was freed
    /// and the slot not reused yet (`freed_slot`), else in the oldest freed
    /// slot or a new one.
    #[cold]
    fn make(
        &mut self,
        key: SessionKey,
        freed_slot: Option<usize>,
        now_ns: u64,
        max_sessions: usize,
        config: impl FnOnce() -> SessionSettings,
    ) -> Option<usize> {
        if self.live >= max_sessions && !self.evict(now_ns, false) {
            return None;
        }
        let (i, seq) = match freed_slot {
            Some(i) => {
                self.freed.remove(&mut self.links, i);
                (i, self.sessions[i].seq)
            }
            None => match self.freed.tail() {
                Some(i) => {
                    self.freed.remove(&mut self.links, i);
                    self.index.remove(&self.sessions[i].key);
                    self.index.insert(key, i);
                    (i, 0)
                }
                None => {
                    let i = self.sessions.len();
                    assert!(i < NIL as usize, "more than 2^32 - 1 session slots");
                    self.index.insert(key, i);
                    (i, 0)
                }
            },
        };
        let stats =
            self.counters
                .new_session_via(key.vni, key.source, key.endpoint.map(|e| e.to_string()));
        let session = Session::new(key, config(), stats, seq, now_ns);
        if i == self.sessions.len() {
            self.sessions.push(session);
            self.links.push(Link::NONE);
            self.open_links.push(Link::NONE);
        } else {
            self.sessions[i] = session;
        }
        if !self.sessions[i].protected {
            self.recent.push_front(&mut self.links, i);
        }
        self.live += 1;
        self.made += 1;
        // The first sessions are logged at info; after that at debug, so
        // a flood of new sources (spoofed or not) cannot flood the log.
        let n = self.made;
        if n <= LOGGED_SESSIONS {
            tracing::info!(
                vni = key.vni,
                source = %key.source,
                endpoint = key.endpoint.map(tracing::field::display),
                worker = std::thread::current().name().unwrap_or("-"),
                "new mirror session"
            );
            if n == LOGGED_SESSIONS {
                tracing::info!(
                    "{LOGGED_SESSIONS} sessions on this worker: further new sessions are logged at debug level"
                );
            }
        } else {
            tracing::debug!(
                vni = key.vni,
                source = %key.source,
                endpoint = key.endpoint.map(tracing::field::display),
                "new mirror session"
            );
        }
        Some(i)
    }

    /// Evicts the least recently active session that may be evicted (not
    /// protected, silent for [`EVICT_MIN_IDLE_NS`]); with `with_file`, the
    /// least recently active of those with a file open. `false` when none
    /// may be.
    fn evict(&mut self, now_ns: u64, with_file: bool) -> bool {
        // The lists are about right (a session moves at most every
        // MOVE_EVERY_NS, the one being looked up again and again not at
        // all): a tail seen lately is moved to the front and the next one
        // tried, a few times.
        for _ in 0..EVICT_TRIES {
            let tail = if with_file {
                self.open.tail()
            } else {
                self.recent.tail()
            };
            let Some(j) = tail else { return false };
            if now_ns.saturating_sub(self.sessions[j].seen_ns) >= EVICT_MIN_IDLE_NS {
                tracing::debug!(
                    vni = self.sessions[j].key.vni,
                    source = %self.sessions[j].key.source,
                    endpoint = self.sessions[j].key.endpoint.map(tracing::field::display),
                    "session evicted"
                );
                self.free(j, Freed::Evicted);
                return true;
            }
            let seen = self.sessions[j].seen_ns;
            self.sessions[j].moved_ns = 0;
            self.touch(j, seen);
        }
        false
    }

    /// Frees session `i`'s entry: closes its file, adds its counters to
    /// the freed sessions' totals, and puts its slot at the front of the
    /// freed list (its key still finds it until the slot is reused).
    fn free(&mut self, i: usize, why: Freed) {
        self.close(i);
        let s = &mut self.sessions[i];
        s.live = false;
        s.filter = None;
        s.own.extra = Vec::new();
        self.counters
            .retire_session(&s.stats, why == Freed::Evicted);
        if self.track_released {
            self.released.push(s.id);
        }
        if !s.protected {
            self.recent.remove(&mut self.links, i);
        }
        self.freed.push_front(&mut self.links, i);
        self.live -= 1;
        if self.last.is_some_and(|(_, l)| l == i) {
            self.last = None;
        }
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Session {
        &mut self.sessions[i]
    }

    /// Live sessions.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// A reloaded config: every open file is closed (the next packet opens
    /// one with the new output settings) and every session gets its
    /// settings again.
    pub fn reconfigure(
        &mut self,
        out: &OutputConfig,
        hook: crate::output::hook::RotateHook,
        mut config: impl FnMut(SessionKey) -> SessionSettings,
    ) {
        for i in 0..self.sessions.len() {
            if !self.sessions[i].live {
                continue;
            }
            self.close(i);
            let SessionSettings {
                filter,
                extra,
                protected,
            } = config(self.sessions[i].key);
            let s = &mut self.sessions[i];
            s.filter = filter;
            s.own.extra = extra;
            if s.protected != protected {
                s.protected = protected;
                if protected {
                    self.recent.remove(&mut self.links, i);
                } else {
                    self.recent.push_front(&mut self.links, i);
                }
            }
        }
        self.last = None;
        self.output.reconfigure(
            out.template.clone(),
            out.max_files,
            out.max_total_bytes,
            hook,
        );
        self.output.set_fsync(out.fsync);
        self.output.flush();
    }

    /// Closes every file and waits for the writer to finish; the figures of
    /// the live sessions (the freed ones are in the counters' totals).
    pub fn finish(mut self) -> Vec<SessionSummary> {
        for i in 0..self.sessions.len() {
            self.close(i);
        }
        self.output.finish();
        let mut v: Vec<_> = self
            .sessions
            .iter()
            .filter(|s| s.live)
            .map(Session::summary)
            .collect();
        v.sort_by_key(|s| (s.vni, s.source));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(dir: &std::path::Path) -> (SessionTable, Arc<Counters>) {
        let counters = Arc::new(Counters::default());
        let output = Output::spawn(
            dir,
            crate::output::template::OutputTemplate::default(),
            crate::output::retention::Retention::new(None, None),
            crate::output::hook::RotateHook::new(Vec::new(), 1),
            counters.clone(),
            4,
            crate::output::handle::Backlog::Wait,
        );
        (SessionTable::new(output, counters.clone()), counters)
    }

    fn key(vni: u32) -> SessionKey {
        SessionKey {
            source: "10.0.0.1".parse().unwrap(),
            vni,
            endpoint: None,
        }
    }

    /// Issue 14 item 6 (speed): the hand-written hash of `SessionKey`
    /// keeps the derived meaning: keys differing in the source (including
    /// an IPv4 address and the IPv6 address with the same low 32 bits), the
    /// VNI or the endpoint (absent, 0, another) are different entries of a
    /// map; equal keys hash alike and find the same entry.
    #[test]
    fn session_key_hash_tells_every_field_apart() {
        use crate::wire::geneve::EndpointId;
        use std::hash::BuildHasher;
        let mut keys = Vec::new();
        for source in ["10.0.0.1", "10.0.0.2", "::a00:1", "2001:db8::1"] {
            for vni in [0, 1, 1 << 23] {
                for endpoint in [None, Some(EndpointId(0)), Some(EndpointId(1 << 40))] {
                    keys.push(SessionKey {
                        source: source.parse().unwrap(),
                        vni,
                        endpoint,
                    });
                }
            }
        }
        let mut map = foldhash::HashMap::default();
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(map.insert(*k, i), None, "{k:?}");
        }
        let hasher = map.hasher().clone();
        for (i, k) in keys.iter().enumerate() {
            let copy = *k;
            assert_eq!(map.get(&copy), Some(&i));
            assert_eq!(hasher.hash_one(copy), hasher.hash_one(k));
        }
    }

    fn settings(protected: bool) -> SessionSettings {
        SessionSettings {
            filter: None,
            extra: Vec::new(),
            protected,
        }
    }

    const S: u64 = 1_000_000_000;

    /// Issue 12 item 2: a full table evicts its least recently active
    /// session, never a protected one nor one seen within a second, and
    /// reuses the freed slot; the evicted key comes back as a new session.
    #[test]
    fn full_table_evicts_least_recently_active() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut t, c) = table(tmp.path());
        let plain = || settings(false);
        assert_eq!(t.lookup(key(1), 10 * S, 3, || settings(true)), Some(0));
        assert_eq!(t.lookup(key(2), 11 * S, 3, plain), Some(1));
        assert_eq!(t.lookup(key(3), 12 * S, 3, plain), Some(2));
        // 2 seen again: 3 is now the least recently active evictable one.
        assert_eq!(t.lookup(key(2), 13 * S, 3, plain), Some(1));
        // Within a second of its last datagram, nothing is evicted.
        assert_eq!(t.lookup(key(4), 12 * S + S / 2, 3, plain), None);
        assert_eq!(
            c.sessions_evicted
                .load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // Later, 3 is evicted (not 1: protected) and its slot reused.
        assert_eq!(t.lookup(key(4), 14 * S, 3, plain), Some(2));
        assert_eq!(
            c.sessions_evicted
                .load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(t.len(), 3);
        // 3 again: 2 goes (least recent of 2 and 4), 3 gets its slot.
        assert_eq!(t.lookup(key(3), 20 * S + S / 2, 3, plain), Some(1));
        assert_eq!(t.lookup(key(2), 21 * S, 3, plain), Some(2));
        // Only protected and busy sessions: refused.
        assert_eq!(t.lookup(key(5), 21 * S, 3, plain), None);
        t.finish();
    }

    /// Idle sessions are freed; one coming back before its slot is reused
    /// keeps its file numbering; the `last` shortcut never returns a slot
    /// that another key took.
    #[test]
    fn idle_sessions_are_freed_and_slots_reused() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut t, c) = table(tmp.path());
        let out = OutputConfig {
            idle_timeout: std::time::Duration::from_secs(5),
            ..crate::config::Config::default_config().output
        };
        let frame = [0u8; 60];
        let plain = || settings(false);
        let i = t.lookup(key(1), S, 10, plain).unwrap();
        t.write(i, S, &frame, 60, &out, 10);
        assert_eq!(t.sessions[i].seq, 1);
        t.close_idle(7 * S, &out);
        assert_eq!(t.len(), 0);
        assert_eq!(
            c.sessions_freed.load(std::sync::atomic::Ordering::Relaxed),
            1
        );
        assert_eq!(
            c.files_requested.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
        // Back before the slot is reused: same slot, next file number.
        let j = t.lookup(key(1), 8 * S, 10, plain).unwrap();
        assert_eq!((j, t.sessions[j].seq), (i, 1));
        // Freed again, then another key takes the slot; key 1 is new.
        t.close_idle(20 * S, &out);
        let k = t.lookup(key(2), 21 * S, 10, plain).unwrap();
        assert_eq!((k, t.sessions[k].seq), (i, 0));
        let m = t.lookup(key(1), 21 * S, 10, plain).unwrap();
        assert_ne!(m, k);
        assert_eq!(t.sessions[m].seq, 0);
        assert_eq!(t.lookup(key(2), 21 * S, 10, plain), Some(k));
        t.finish();
    }

    /// Issue 12 item 2: with every file slot taken, a new session's frame
    /// evicts the least recently active session that has a file open.
    #[test]
    fn full_file_slots_evict_least_recently_active_file() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut t, c) = table(tmp.path());
        let out = crate::config::Config::default_config().output;
        let frame = [0u8; 60];
        let plain = || settings(false);
        for (n, vni) in [1u32, 2].into_iter().enumerate() {
            let i = t.lookup(key(vni), (n as u64 + 1) * S, 10, plain).unwrap();
            t.write(i, (n as u64 + 1) * S, &frame, 60, &out, 2);
        }
        let i = t.lookup(key(3), 10 * S, 10, plain).unwrap();
        t.write(i, 10 * S, &frame, 60, &out, 2);
        assert!(t.sessions[i].file.is_some());
        assert!(
            !t.sessions[0].live,
            "session 1 was the least recently active"
        );
        assert!(t.sessions[1].live);
        assert_eq!(
            c.files_requested.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(c.drops(crate::pipeline::DropReason::OpenFileLimit), 0);
        t.finish();
    }

    /// Review of issue 12, item 2: with two workers, one worker's silent
    /// sessions never take the other's file slots: each worker has its
    /// share of `max_open_files` and evicts only its own sessions.
    #[test]
    fn a_worker_full_of_idle_files_does_not_lock_out_another() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut a, c) = table(tmp.path());
        let mut b = a.sibling();
        let out = crate::config::Config::default_config().output;
        let frame = [0u8; 60];
        let plain = || settings(false);
        // Worker A: as many sessions with a file as max_open_files (4),
        // silent since; only 2 of them get a slot (its share).
        for vni in 1..=4u32 {
            let i = a.lookup(key(vni), S, 100, plain).unwrap();
            a.write(i, S, &frame, 60, &out, 4);
        }
        assert_eq!(c.drops(crate::pipeline::DropReason::OpenFileLimit), 2);
        // Worker B, a moment later (less than the 1 s before a session may
        // be evicted): its new session gets a slot of its own share.
        let i = b.lookup(key(100), S + 1, 100, plain).unwrap();
        b.write(i, S + 1, &frame, 60, &out, 4);
        assert!(b.sessions[i].file.is_some());
        assert_eq!(c.drops(crate::pipeline::DropReason::OpenFileLimit), 2);
        b.finish();
        a.finish();
    }
}
