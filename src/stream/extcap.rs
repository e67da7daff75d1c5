//! Wireshark's extcap protocol for `mirrorcap extcap`: the interface list
//! (one interface per live session, and one for all of them), the link
//! type, the options dialog, and the interface name <-> subscription
//! mapping. Text only; the command in `main.rs` does the I/O (the control
//! socket, the FIFO).
//!
//! Interface names: `mirrorcap-all`, and `mirrorcap-vni<VNI>-<source>` with
//! `-<vpce-…>` for a GWLB session; an IPv6 source is written with `_` for
//! `:` (as in output paths: Wireshark takes `:` in an interface name for
//! a remote one).

use std::fmt::Write as _;

use super::message::{Request, SessionInfo};

/// The interface for every session.
pub const ALL: &str = "mirrorcap-all";

/// The interface name of a session.
pub fn interface_name(s: &SessionInfo) -> String {
    let mut n = format!(
        "mirrorcap-vni{}-{}",
        s.vni,
        s.source.to_string().replace(':', "_")
    );
    if let Some(e) = &s.endpoint {
        n.push('-');
        n.push_str(e);
    }
    n
}

/// The subscription an interface name stands for; `None` when it is not
/// one of ours.
pub fn request_for(interface: &str) -> Option<Request> {
    if interface == ALL {
        return Some(Request::default());
    }
    let rest = interface.strip_prefix("mirrorcap-vni")?;
    let (vni, rest) = rest.split_once('-')?;
    let (source, endpoint) = match rest.split_once("-vpce-") {
        Some((s, e)) => (s, Some(format!("vpce-{e}"))),
        None => (rest, None),
    };
    Some(Request {
        vnis: vec![vni.parse().ok()?],
        sources: vec![source.replace('_', ":").parse().ok()?],
        endpoints: endpoint.into_iter().collect(),
        ..Default::default()
    })
}

/// `--extcap-interfaces`: the version line and the interfaces.
pub fn interfaces(sessions: &[SessionInfo]) -> String {
    let mut t = format!(
        "extcap {{version={}}}{{help=https://github.com/mirrorcap/mirrorcap#watch-live}}\n",
        env!("CARGO_PKG_VERSION")
    );
    let _ = writeln!(
        t,
        "interface {{value={ALL}}}{{display=mirrorcap: every mirror session}}"
    );
    for s in sessions {
        let through = s
            .endpoint
            .as_ref()
            .map_or(String::new(), |e| format!(" through {e}"));
        let _ = writeln!(
            t,
            "interface {{value={}}}{{display=mirrorcap: VNI {} from {}{through}}}",
            interface_name(s),
            s.vni,
            s.source
        );
    }
    t
}

/// `--extcap-dlts`: Ethernet, as the daemon writes.
pub fn dlts() -> &'static str {
    "dlt {number=1}{name=EN10MB}{display=Ethernet (inner frames of the mirror session)}\n"
}

/// `--extcap-config`: the options Wireshark shows (and passes back at
/// capture), with `socket` as the default control socket.
pub fn config(socket: &str) -> String {
    format!(
        "arg {{number=0}}{{call=--socket}}{{display=Control socket}}{{type=string}}{{default={socket}}}{{tooltip=The daemon's control_socket}}\n\
         arg {{number=1}}{{call=--config}}{{display=Daemon config file}}{{type=fileselect}}{{mustexist=true}}{{tooltip=Find the control socket in this config (instead of the socket above)}}\n\
         arg {{number=2}}{{call=--vni}}{{display=VNIs}}{{type=string}}{{tooltip=Only these VNIs, comma-separated (the interface's session otherwise)}}\n\
         arg {{number=3}}{{call=--filter}}{{display=Filter (daemon side)}}{{type=string}}{{tooltip=A libpcap expression the daemon applies before sending}}\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_round_trip() {
        let v6 = SessionInfo {
            vni: 7,
            source: "2001:db8::1".parse().unwrap(),
            endpoint: Some("vpce-00123456789abcdef".into()),
        };
        let v4 = SessionInfo {
            vni: 16_777_215,
            source: "10.0.0.1".parse().unwrap(),
            endpoint: None,
        };
        for s in [&v6, &v4] {
            let name = interface_name(s);
            assert!(!name.contains(':'), "{name}");
            let r = request_for(&name).unwrap();
            assert_eq!(r.vnis, [s.vni]);
            assert_eq!(r.sources, [s.source]);
            assert_eq!(r.endpoints, s.endpoint.iter().cloned().collect::<Vec<_>>());
        }
        assert_eq!(request_for(ALL), Some(Request::default()));
        assert_eq!(request_for("eth0"), None);
        assert_eq!(request_for("mirrorcap-vnix-10.0.0.1"), None);
        let text = interfaces(&[v4]);
        assert!(text.starts_with("extcap {version="), "{text}");
        assert!(
            text.contains("{value=mirrorcap-vni16777215-10.0.0.1}"),
            "{text}"
        );
    }
}
