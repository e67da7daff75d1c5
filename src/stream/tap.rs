//! A worker's view of the subscribers ([`Hub`]): the frames of the
//! sessions they want, gathered per batch.
//!
//! In: each frame about to be written (after the daemon's filters), with
//! its session. Out: per subscriber, the batch's FRAME messages offered at
//! once ([`Tap::flush`], called per receive batch), and each session
//! announced the first time a subscriber gets one of its frames.
//! Dropped and counted: a frame that would take a subscriber's batch past
//! its queue's capacity (`stream_backlog`).
//!
//! Cost: with no subscriber, one relaxed atomic load and one branch per
//! frame ([`Tap::active`]). With some, what a session wants is worked out
//! once per subscriber change and kept in the session ([`SessionTap`]);
//! a wanted frame is one copy into a buffer kept from batch to batch (no
//! allocation once it has grown), and each batch one lock and one wakeup
//! per subscriber with frames.

use std::net::IpAddr;
use std::sync::Arc;

use super::hub::{Hub, MAX_SUBSCRIBERS, Subscriber};
use super::message::{FRAME_FIXED, HEADER_LEN, StreamSession, frame_header};
use crate::wire::geneve::EndpointId;

/// What a session wants of the tap, worked out once per subscriber change.
#[derive(Clone, Copy, Debug, Default)]
pub struct SessionTap {
    generation: u64,
    /// Bit i: subscriber i of that generation wants this session.
    wants: u64,
    /// Bit i: subscriber i has been told of this session.
    announced: u64,
}

/// One subscriber's part of the current batch.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    frames: u64,
    /// Frames left out of this batch for lack of room.
    over: u64,
}

/// A worker's tap.
pub struct Tap {
    hub: Arc<Hub>,
    /// The generation `subs` is of; [`SessionTap`]s of another are stale.
    /// Starts at `u64::MAX` so that no session matches before the first
    /// refresh.
    generation: u64,
    subs: Arc<[Arc<Subscriber>]>,
    pending: Vec<Pending>,
}

impl Tap {
    pub fn new(hub: Arc<Hub>) -> Tap {
        let mut t = Tap {
            hub,
            generation: u64::MAX,
            subs: Arc::from(Vec::new()),
            pending: Vec::new(),
        };
        t.refresh();
        t
    }

    /// Another worker's tap on the same hub.
    pub fn sibling(&self) -> Tap {
        Tap::new(self.hub.clone())
    }

    /// Whether any subscriber is in force, picking up a change of
    /// subscribers first (one relaxed atomic load: a plain load on x86 and
    /// ARM, of a line written only when a subscriber comes or goes), so
    /// that every frame written after a subscription was accepted reaches
    /// it.
    #[inline(always)]
    pub fn active(&mut self) -> bool {
        if self.hub.generation_relaxed() != self.generation {
            self.refresh();
        }
        !self.subs.is_empty()
    }

    /// Offers one frame of session (`vni`, `source`, `endpoint`; `id`
    /// names it to subscribers) to each subscriber that wants it.
    #[allow(clippy::too_many_arguments)]
    pub fn offer(
        &mut self,
        st: &mut SessionTap,
        id: u64,
        vni: u32,
        source: IpAddr,
        endpoint: Option<EndpointId>,
        ts_ns: u64,
        frame: &[u8],
        wire_len: usize,
    ) {
        if st.generation != self.generation {
            st.generation = self.generation;
            st.announced = 0;
            st.wants = self
                .subs
                .iter()
                .enumerate()
                .filter(|(_, s)| s.selection.wants(vni, source, endpoint))
                .fold(0, |m, (i, _)| m | (1 << i));
        }
        let mut wants = st.wants;
        while wants != 0 {
            let i = wants.trailing_zeros() as usize;
            wants &= wants - 1;
            let sub = &self.subs[i];
            let p = &mut self.pending[i];
            let need = HEADER_LEN + FRAME_FIXED + frame.len();
            if p.bytes.len() + need > sub.capacity {
                p.over += 1;
                continue;
            }
            if st.announced & (1 << i) == 0 {
                st.announced |= 1 << i;
                sub.announce(StreamSession {
                    id,
                    vni,
                    source,
                    endpoint,
                });
            }
            let wire = u32::try_from(wire_len).unwrap_or(u32::MAX);
            p.bytes
                .extend_from_slice(&frame_header(id, ts_ns, wire, frame.len()));
            p.bytes.extend_from_slice(frame);
            p.frames += 1;
        }
    }

    /// Hands each subscriber its part of the batch. Called per receive
    /// batch, and before the subscribers change.
    pub fn flush(&mut self) {
        for (sub, p) in self.subs.iter().zip(&mut self.pending) {
            if p.frames > 0 {
                sub.offer(&p.bytes, p.frames);
                p.bytes.clear();
                p.frames = 0;
            }
            if p.over > 0 {
                sub.count_dropped(p.over);
                p.over = 0;
            }
        }
    }

    /// Takes the subscribers in force now; what was gathered for the
    /// previous ones is handed to them first.
    #[cold]
    fn refresh(&mut self) {
        self.flush();
        let (generation, subs) = self.hub.current();
        self.generation = generation;
        self.subs = subs;
        // Never more than the masks can name: Hub::new asserts it.
        debug_assert!(self.subs.len() <= MAX_SUBSCRIBERS);
        self.pending.truncate(0);
        self.pending.resize_with(self.subs.len(), Pending::default);
    }
}
