//! The subscribers in force. The control socket's server adds one per
//! accepted request and removes it when its reader goes away; the
//! workers read the list through their [`super::Tap`], which notices a
//! change by one atomic load per batch ([`Hub::generation`]).
//!
//! Each [`Subscriber`] has a bounded queue of bytes (whole messages, see
//! [`super::message`]): a worker offers one batch at a time, taken whole
//! or dropped whole and counted (`stream_backlog`: per subscriber, and in
//! the shared counters), so a reader that stops never holds up capture.
//! Sessions are announced apart from the queue (never dropped), before
//! any batch that holds their frames.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::message::StreamSession;
use crate::telemetry::counters::Counters;
use crate::wire::geneve::EndpointId;

/// Which sessions a subscriber wants; an empty set means any.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    pub vnis: BTreeSet<u32>,
    pub sources: BTreeSet<IpAddr>,
    pub endpoints: BTreeSet<EndpointId>,
}

impl Selection {
    pub fn wants(&self, vni: u32, source: IpAddr, endpoint: Option<EndpointId>) -> bool {
        (self.vnis.is_empty() || self.vnis.contains(&vni))
            && (self.sources.is_empty() || self.sources.contains(&source))
            && (self.endpoints.is_empty() || endpoint.is_some_and(|e| self.endpoints.contains(&e)))
    }
}

/// FRAME messages in `bytes` (whole messages).
pub fn count_frames(bytes: &[u8]) -> u64 {
    let mut at = 0;
    let mut frames = 0;
    while let Ok(Some((m, n))) = super::message::next(&bytes[at..]) {
        frames += u64::from(matches!(m, super::message::Message::Frame { .. }));
        at += n;
    }
    frames
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What [`Subscriber::take`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Taken {
    /// Bytes were moved into the caller's buffer.
    Bytes,
    /// Nothing came within the timeout.
    Nothing,
    /// The daemon is stopping and the queue is empty: the end.
    Closed,
}

struct Queue {
    bytes: Vec<u8>,
    closed: bool,
}

/// One subscriber: its selection, queue and counts.
pub struct Subscriber {
    pub id: u64,
    pub selection: Selection,
    /// Most bytes queued at once.
    pub capacity: usize,
    queue: Mutex<Queue>,
    ready: Condvar,
    /// Sessions announced and not yet sent, and the ids ever announced
    /// (a session is told once, however often the workers re-announce it
    /// when subscribers come and go).
    sessions: Mutex<(Vec<StreamSession>, std::collections::HashSet<u64>)>,
    /// Frames dropped because the queue was full.
    dropped: AtomicU64,
    counters: Arc<Counters>,
}

impl Subscriber {
    /// Queues one batch of whole messages, or drops it whole (and counts
    /// its `frames`) when it does not fit. Wakes the sender.
    pub fn offer(&self, batch: &[u8], frames: u64) {
        let mut q = lock(&self.queue);
        if q.closed {
            return;
        }
        if q.bytes.len() + batch.len() > self.capacity {
            drop(q);
            self.count_dropped(frames);
            return;
        }
        q.bytes.extend_from_slice(batch);
        drop(q);
        self.ready.notify_one();
    }

    /// Frames this subscriber could not take.
    pub fn count_dropped(&self, frames: u64) {
        if frames > 0 {
            self.dropped.fetch_add(frames, Relaxed);
            self.counters.stream_dropped.fetch_add(frames, Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Relaxed)
    }

    /// A session whose frames will follow (sent before them, never dropped).
    pub fn announce(&self, s: StreamSession) {
        let mut g = lock(&self.sessions);
        if g.1.insert(s.id) {
            g.0.push(s);
        }
    }

    /// Sessions announced since the last call.
    pub fn take_sessions(&self, out: &mut Vec<StreamSession>) {
        out.append(&mut lock(&self.sessions).0);
    }

    /// Waits up to `timeout` for queued bytes and swaps them into `out`
    /// (which must be empty; its capacity is reused by the queue).
    pub fn take(&self, out: &mut Vec<u8>, timeout: Duration) -> Taken {
        let mut q = lock(&self.queue);
        if q.bytes.is_empty() && !q.closed {
            q = self
                .ready
                .wait_timeout(q, timeout)
                .map_or_else(|e| e.into_inner().0, |(g, _)| g);
        }
        if !q.bytes.is_empty() {
            std::mem::swap(&mut q.bytes, out);
            Taken::Bytes
        } else if q.closed {
            Taken::Closed
        } else {
            Taken::Nothing
        }
    }

    /// Empties the queue; its frames are counted as not delivered. Returns
    /// how many.
    pub fn discard_queued(&self) -> u64 {
        let bytes = std::mem::take(&mut lock(&self.queue).bytes);
        let frames = count_frames(&bytes);
        self.count_dropped(frames);
        frames
    }

    /// Whether the daemon is stopping.
    pub fn is_closed(&self) -> bool {
        lock(&self.queue).closed
    }

    /// The daemon is stopping: what is queued is still sent, then the end.
    fn close(&self) {
        lock(&self.queue).closed = true;
        self.ready.notify_all();
    }
}

/// Most subscribers a session's bit masks (in the tap) can name.
pub const MAX_SUBSCRIBERS: usize = 64;

/// Every subscriber in force, shared by the workers and the server.
pub struct Hub {
    subscribers: Mutex<Arc<[Arc<Subscriber>]>>,
    generation: AtomicU64,
    next_id: AtomicU64,
    closed: AtomicBool,
    /// Most subscribers at once (`max_subscribers`).
    pub max: usize,
    /// Queue bytes per subscriber (`stream_queue`).
    pub queue_bytes: usize,
    counters: Arc<Counters>,
}

/// Why a subscriber was not added.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SubscribeError {
    #[error("{0} subscribers already (`max_subscribers`); try again when one has gone")]
    Full(usize),
    #[error("the daemon is stopping")]
    Stopping,
}

impl Hub {
    /// A hub for at most `max` subscribers; `max` may not pass
    /// [`MAX_SUBSCRIBERS`] (the config refuses more).
    pub fn new(max: usize, queue_bytes: usize, counters: Arc<Counters>) -> Arc<Hub> {
        assert!(
            max <= MAX_SUBSCRIBERS,
            "max_subscribers {max} > {}",
            MAX_SUBSCRIBERS
        );
        Arc::new(Hub {
            subscribers: Mutex::new(Arc::from(Vec::new())),
            generation: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            closed: AtomicBool::new(false),
            max,
            queue_bytes,
            counters,
        })
    }

    /// Changes with every subscriber added or removed.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// [`Hub::generation`] for the per-frame check: a change is seen a
    /// little later at worst, and [`Hub::current`] reads the list under
    /// the lock.
    #[inline(always)]
    pub fn generation_relaxed(&self) -> u64 {
        self.generation.load(Relaxed)
    }

    /// The subscribers in force and their generation.
    pub fn current(&self) -> (u64, Arc<[Arc<Subscriber>]>) {
        let list = lock(&self.subscribers);
        (self.generation(), list.clone())
    }

    /// Adds a subscriber for `selection`.
    pub fn subscribe(&self, selection: Selection) -> Result<Arc<Subscriber>, SubscribeError> {
        let mut list = lock(&self.subscribers);
        if self.closed.load(Relaxed) {
            return Err(SubscribeError::Stopping);
        }
        if list.len() >= self.max {
            return Err(SubscribeError::Full(list.len()));
        }
        let s = Arc::new(Subscriber {
            id: self.next_id.fetch_add(1, Relaxed),
            selection,
            capacity: self.queue_bytes,
            queue: Mutex::new(Queue {
                bytes: Vec::new(),
                closed: false,
            }),
            ready: Condvar::new(),
            sessions: Mutex::new(Default::default()),
            dropped: AtomicU64::new(0),
            counters: self.counters.clone(),
        });
        let mut v = list.to_vec();
        v.push(s.clone());
        self.replace(&mut list, v);
        Ok(s)
    }

    /// Removes subscriber `id` (its reader went away); what the workers
    /// still offer it is neither kept nor counted.
    pub fn unsubscribe(&self, id: u64) {
        let mut list = lock(&self.subscribers);
        for s in list.iter().filter(|s| s.id == id) {
            lock(&s.queue).closed = true;
            s.discard_queued();
        }
        let v: Vec<_> = list.iter().filter(|s| s.id != id).cloned().collect();
        if v.len() != list.len() {
            self.replace(&mut list, v);
        }
    }

    fn replace(&self, list: &mut Arc<[Arc<Subscriber>]>, v: Vec<Arc<Subscriber>>) {
        self.counters
            .stream_subscribers
            .store(v.len() as u64, Relaxed);
        *list = Arc::from(v);
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::Release);
    }

    /// The daemon is ending and the subscribers still listed could not be
    /// sent what was queued for them (their readers stopped reading): the
    /// frames left in their queues are counted as not delivered
    /// (`stream_backlog`), not lost silently. Returns how many.
    pub fn abandon_queued(&self) -> u64 {
        lock(&self.subscribers)
            .iter()
            .map(|s| s.discard_queued())
            .sum()
    }

    /// The daemon is stopping: no new subscriber; each one's sender sends
    /// what is queued and ends.
    pub fn close(&self) {
        let list = lock(&self.subscribers);
        self.closed.store(true, Relaxed);
        for s in list.iter() {
            s.close();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selection_and_bounded_queue() {
        let counters = Arc::new(Counters::default());
        let hub = Hub::new(2, 100, counters.clone());
        let sel = Selection {
            vnis: [5].into(),
            ..Default::default()
        };
        assert!(sel.wants(5, "10.0.0.1".parse().unwrap(), None));
        assert!(!sel.wants(6, "10.0.0.1".parse().unwrap(), None));
        let gwlb = Selection {
            endpoints: [EndpointId(3)].into(),
            ..Default::default()
        };
        assert!(!gwlb.wants(5, "10.0.0.1".parse().unwrap(), None));
        assert!(gwlb.wants(5, "10.0.0.1".parse().unwrap(), Some(EndpointId(3))));

        let g0 = hub.generation();
        let a = hub.subscribe(sel).unwrap();
        let b = hub.subscribe(Selection::default()).unwrap();
        assert!(matches!(
            hub.subscribe(Selection::default()),
            Err(SubscribeError::Full(2))
        ));
        assert_ne!(hub.generation(), g0);
        a.offer(&[1; 60], 3);
        a.offer(&[2; 60], 4); // does not fit: dropped whole
        assert_eq!(a.dropped(), 4);
        assert_eq!(counters.stream_dropped.load(Relaxed), 4);
        let s = StreamSession {
            id: 9,
            vni: 5,
            source: "10.0.0.1".parse().unwrap(),
            endpoint: None,
        };
        for _ in 0..1000 {
            a.announce(s); // re-announced at every change of subscribers
        }
        let mut told = Vec::new();
        a.take_sessions(&mut told);
        a.announce(s);
        a.take_sessions(&mut told);
        assert_eq!(told, [s]);
        let mut out = Vec::new();
        assert_eq!(a.take(&mut out, Duration::ZERO), Taken::Bytes);
        assert_eq!(out, [1; 60]);
        out.clear();
        assert_eq!(a.take(&mut out, Duration::from_millis(1)), Taken::Nothing);
        hub.unsubscribe(b.id);
        assert_eq!(hub.current().1.len(), 1);
        assert_eq!(counters.stream_subscribers.load(Relaxed), 1);
        a.offer(&[3; 10], 1);
        hub.close();
        assert_eq!(a.take(&mut out, Duration::ZERO), Taken::Bytes);
        out.clear();
        assert_eq!(a.take(&mut out, Duration::ZERO), Taken::Closed);
        assert!(matches!(
            hub.subscribe(Selection::default()),
            Err(SubscribeError::Stopping)
        ));
    }
}
