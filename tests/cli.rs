//! The command line: help, version, check-config on the example and on
//! broken files.

mod common;

use common::*;

#[test]
fn help_on_every_subcommand_and_version() {
    for sub in [
        &["--help"][..],
        &["run", "--help"],
        &["replay", "--help"],
        &["check-config", "--help"],
    ] {
        let (code, out, _) = mirrorcap(sub);
        assert_eq!(code, 0, "{sub:?}");
        assert!(out.contains("Usage: mirrorcap"), "{sub:?}: {out}");
    }
    let (code, out, _) = mirrorcap(&["--version"]);
    assert_eq!(code, 0);
    assert_eq!(
        out.trim(),
        format!("mirrorcap {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn example_config_is_valid_and_documents_every_key() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/mirrorcap.toml");
    let (code, out, err) = mirrorcap(&["check-config", example]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(": ok"));
    let text = std::fs::read_to_string(example).unwrap();
    for key in [
        "listen",
        "dir",
        "vxlan_ports",
        "vnis",
        "exclude_vnis",
        "[output]",
        "template",
        "format",
        "snaplen",
        "rotate_size",
        "rotate_interval",
        "rotate_packets",
        "max_files",
        "max_total_bytes",
        "idle_timeout",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(key)),
            "example lacks {key}"
        );
    }
}

#[test]
fn check_config_names_file_line_key_and_accepted_values() {
    let tmp = tempfile::tempdir().unwrap();
    let cases = [
        (
            "listen = \"0.0.0.0:4789\"\nlisten_port = 5\n",
            ":2: `listen_port`: unknown key `listen_port`, expected one of",
        ),
        (
            "[output]\nrotate_size = \"12M\"\n",
            ":2: `output.rotate_size`: \"12M\" has an unknown unit",
        ),
        (
            "[output]\nformat = \"erf\"\n",
            ":2: `output.format`: \"erf\" is not an output format: expected \"pcap\" or \"pcapng\"",
        ),
        (
            "vnis = [16777216]\n",
            ":1: `vnis`: VNI 16777216 is out of range",
        ),
        (
            "[output]\ntemplate = \"/etc/{vni}/{source}/{seq}.{ext}\"\n",
            ":2: `output.template`:",
        ),
        ("listen = 4789\n", ":1: `listen`:"),
        ("[output\n", ":1:"),
    ];
    for (i, (text, want)) in cases.iter().enumerate() {
        let f = tmp.path().join(format!("bad{i}.toml"));
        std::fs::write(&f, text).unwrap();
        let (code, _, err) = mirrorcap(&["check-config", f.to_str().unwrap()]);
        assert_eq!(code, 2, "{text}");
        let prefix = format!("mirrorcap: {}{want}", f.display());
        assert!(
            err.starts_with(&prefix),
            "{text:?}\n got: {err}\nwant: {prefix}"
        );
    }
    let (code, _, err) = mirrorcap(&["check-config", "/nonexistent.toml"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("/nonexistent.toml: cannot read config"),
        "{err}"
    );
}

#[test]
fn run_reports_a_port_in_use() {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = s.local_addr().unwrap().to_string();
    let (code, _, err) = mirrorcap(&["run", "--listen", &addr, "--dir", "/tmp/unused-mirrorcap"]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("cannot bind UDP {addr}")), "{err}");
}

/// A config with a `bpf` expression on a machine without libpcap: refused
/// at load with the file, line and key, and the package to install. The
/// library is hidden in a private mount namespace (`unshare -m`, root) by
/// mounting /dev/null over it, so dlopen really fails.
#[test]
fn bpf_without_libpcap_names_the_package() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED bpf_without_libpcap_names_the_package: a mount namespace needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("bpf.toml");
    std::fs::write(&cfg, "[filter]\nbpf = \"tcp port 22\"\n").unwrap();
    // Every libpcap the loader could find, as the dynamic linker sees them.
    let ldconfig = tool("ldconfig", &["-p"]);
    let libs: Vec<String> = String::from_utf8_lossy(&ldconfig.stdout)
        .lines()
        .filter(|l| l.trim_start().starts_with("libpcap.so"))
        .filter_map(|l| l.split("=> ").nth(1))
        .map(|p| {
            std::fs::canonicalize(p.trim())
                .unwrap()
                .display()
                .to_string()
        })
        .collect();
    assert!(!libs.is_empty(), "libpcap is needed for the tests");
    let hide: Vec<String> = libs
        .iter()
        .map(|l| format!("mount --bind /dev/null {l}"))
        .collect();
    let script = format!(
        "{} && exec {} check-config {}",
        hide.join(" && "),
        bin(),
        cfg.display()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("bpf.toml:2: `filter.bpf`"), "{err}");
    assert!(err.contains("libpcap is not installed"), "{err}");
    assert!(err.contains("apt-get install libpcap0.8"), "{err}");
    // The same file loads where libpcap is present.
    let (code, _, err) = mirrorcap(&["check-config", cfg.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
}
