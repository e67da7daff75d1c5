//! The flow table: per-worker aggregation of kept packets into flows,
//! one window of `flows.interval` at a time.
//!
//! In: each kept inner frame ([`FlowTable::add`]) with its session id,
//! VNI, source, Gateway Load Balancer endpoint and timestamp; session releases; clock ticks
//! ([`FlowTable::advance`]). Out: a [`FlowBatch`] of rendered records per
//! closed window (or part of one, when `flows.max_flows` cut it), sent to
//! the flow writer. Dropped: frames that are not IP (AWS logs IP traffic
//! only); a released session gets no more NODATA records.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, mpsc};

use super::format::{Record, write_record};
use super::record::{FlowAgg, FlowBatch, FlowKey};
use super::{FlowConfig, FlowMetadata};
use crate::filter::OwnAddresses;
use crate::wire::decode::{Decoded, PROTO_TCP};
use crate::wire::geneve::EndpointId;

/// A session as the flow table knows it.
struct FlowSession {
    meta: FlowMetadata,
    /// The Gateway Load Balancer endpoint of a GENEVE-borne session: in
    /// its records (`${endpoint}`, JSON `endpoint`).
    endpoint: Option<EndpointId>,
    /// Packets in the current window.
    active: bool,
    /// The session was freed (idle or evicted): its records of the current
    /// window are written, then it is forgotten (no more NODATA).
    released: bool,
}

/// Per-worker aggregation of flows.
pub struct FlowTable {
    cfg: Arc<FlowConfig>,
    flows: HashMap<FlowKey, FlowAgg>,
    /// The sessions seen, by id, until they are freed.
    sessions: foldhash::HashMap<u64, FlowSession>,
    /// Current window index (`ts / interval`), `None` before the first packet.
    window: Option<u64>,
    out: mpsc::Sender<FlowBatch>,
    stats: Arc<crate::telemetry::counters::Counters>,
}

impl FlowTable {
    pub fn new(
        cfg: Arc<FlowConfig>,
        out: mpsc::Sender<FlowBatch>,
        stats: Arc<crate::telemetry::counters::Counters>,
    ) -> FlowTable {
        FlowTable {
            cfg,
            flows: HashMap::new(),
            sessions: Default::default(),
            window: None,
            out,
            stats,
        }
    }

    pub fn config(&self) -> Arc<FlowConfig> {
        self.cfg.clone()
    }

    /// Counts one kept frame of session `session` (its id, which tells
    /// apart sessions of one source and VNI through two endpoints; `vni`,
    /// `source`, `endpoint` for its metadata and records).
    #[allow(clippy::too_many_arguments)]
    pub fn add(
        &mut self,
        session: u64,
        vni: u32,
        source: IpAddr,
        endpoint: Option<EndpointId>,
        own: &OwnAddresses,
        d: &Decoded,
        ts_ns: u64,
    ) {
        let Some(ip) = &d.ip else { return };
        self.advance(ts_ns);
        let cfg = &self.cfg;
        self.sessions
            .entry(session)
            .or_insert_with(|| FlowSession {
                meta: cfg.metadata(vni, source, endpoint),
                endpoint,
                active: false,
                released: false,
            })
            .active = true;
        let (sport, dport) = ip.ports.unwrap_or((0, 0));
        let key = FlowKey {
            session,
            protocol: ip.protocol,
            src: ip.src,
            dst: ip.dst,
            sport,
            dport,
        };
        if !self.flows.contains_key(&key) && self.flows.len() >= self.cfg.max_flows {
            self.stats.flow_early_flushes.fetch_add(1, Relaxed);
            self.emit(false);
        }
        let e = self.flows.entry(key).or_insert(FlowAgg {
            packets: 0,
            bytes: 0,
            first_ns: ts_ns,
            last_ns: ts_ns,
            tcp_flags: 0,
            direction: own.direction(ip),
        });
        e.packets += 1;
        e.bytes += u64::from(ip.total_len);
        e.first_ns = e.first_ns.min(ts_ns);
        e.last_ns = e.last_ns.max(ts_ns);
        if ip.protocol == PROTO_TCP {
            e.tcp_flags |= ip.tcp_flags.unwrap_or(0) & 0x3f;
        }
    }

    /// Session `session` was freed: after the records of the current
    /// window, it gets no more (no NODATA either).
    pub fn release(&mut self, session: u64) {
        if let Some(s) = self.sessions.get_mut(&session) {
            s.released = true;
        }
    }

    /// Closes every window that ended before `now_ns` (live: once a second;
    /// replay: as packet time advances).
    pub fn advance(&mut self, now_ns: u64) {
        let w = now_ns / 1_000_000_000 / self.cfg.interval_s;
        match self.window {
            None => self.window = Some(w),
            Some(cur) if w > cur => {
                self.emit(true);
                self.window = Some(w);
            }
            _ => {}
        }
    }

    /// Writes out the current window's records; with `end_of_window`, also
    /// NODATA records for sessions silent in it.
    fn emit(&mut self, end_of_window: bool) {
        let Some(w) = self.window else { return };
        let window_s = w * self.cfg.interval_s;
        let mut batch = FlowBatch {
            window_s,
            lines: String::new(),
            json: String::new(),
            values: Vec::new(),
            records: 0,
        };
        let mut flows: Vec<(FlowKey, FlowAgg)> = self.flows.drain().collect();
        flows.sort_by_key(|(k, a)| {
            (
                k.session, a.first_ns, k.protocol, k.src, k.dst, k.sport, k.dport,
            )
        });
        for (k, a) in &flows {
            let rec = Record::Flow(k, a);
            self.write(&mut batch, k.session, &rec, window_s);
        }
        self.stats
            .flow_records
            .fetch_add(flows.len() as u64, Relaxed);
        if end_of_window {
            let mut ids: Vec<u64> = self.sessions.keys().copied().collect();
            ids.sort_unstable();
            for id in ids {
                let s = self.sessions.get_mut(&id).expect("listed above");
                let (active, released) = (std::mem::replace(&mut s.active, false), s.released);
                if !active && !released {
                    self.write(&mut batch, id, &Record::NoData, window_s);
                    self.stats.flow_nodata.fetch_add(1, Relaxed);
                }
            }
            self.sessions.retain(|_, s| !s.released);
        }
        if batch.records > 0 {
            let _ = self.out.send(batch);
        }
    }

    fn write(&self, batch: &mut FlowBatch, session: u64, rec: &Record, window_s: u64) {
        let s = &self.sessions[&session];
        write_record(batch, &self.cfg, &s.meta, s.endpoint, rec, window_s);
    }

    /// Writes out what is left (end of replay, shutdown).
    pub fn finish(&mut self) {
        self.emit(true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flows::{FlowFormat, FlowSessionMeta};

    /// An Ethernet/IPv4/UDP frame 10.0.0.1:40000 -> 10.0.0.2:53.
    fn udp_frame() -> Vec<u8> {
        let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00];
        f.extend_from_slice(&[0x45, 0, 0, 36, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(&[0x9c, 0x40, 0, 53, 0, 16, 0, 0]);
        f.extend_from_slice(&[0; 8]);
        f
    }

    /// Issue 12 item 2: sessions are told apart by id, not table slot; a
    /// freed session's records of the window are written, then it gets no
    /// more NODATA.
    #[test]
    fn freed_sessions_are_not_mixed_and_get_no_more_nodata() {
        let (tx, rx) = mpsc::channel();
        let counters = Arc::new(crate::telemetry::counters::Counters::default());
        let cfg = FlowConfig {
            enabled: true,
            interval_s: 1,
            format: FlowFormat::parse("${srcaddr} ${packets} ${log-status} ${interface-id}")
                .unwrap(),
            sessions: vec![FlowSessionMeta {
                vni: Some(7),
                source: None,
                endpoint: None,
                meta: FlowMetadata {
                    interface_id: Some("eni-seven".into()),
                    ..Default::default()
                },
            }],
            ..Default::default()
        };
        let mut t = FlowTable::new(Arc::new(cfg), tx, counters);
        let src: IpAddr = "10.0.0.9".parse().unwrap();
        let own = OwnAddresses {
            outer: src,
            extra: Vec::new(),
        };
        let frame = udp_frame();
        let d = crate::wire::decode::decode(&frame);
        const S: u64 = 1_000_000_000;
        // Session 1 (VNI 7) freed; session 2 (VNI 8) took its slot.
        t.add(1, 7, src, None, &own, &d, 10 * S);
        t.add(1, 7, src, None, &own, &d, 10 * S);
        t.release(1);
        t.add(2, 8, src, None, &own, &d, 10 * S);
        t.advance(11 * S);
        t.advance(12 * S);
        drop(t);
        let lines: Vec<String> = rx
            .iter()
            .flat_map(|b| b.lines.lines().map(String::from).collect::<Vec<_>>())
            .collect();
        assert_eq!(
            lines,
            ["10.0.0.1 2 OK eni-seven", "10.0.0.1 1 OK -", "- - NODATA -",]
        );
    }
}
