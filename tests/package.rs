//! The Debian package (issue 16, item 4): `cargo deb` packs the binary this
//! test run built, and the package holds what the README's service section
//! installs from it (binary, systemd unit, the example config as a
//! conffile, the group for the live-subscriber socket); `lintian` finds no
//! error in it.
//!
//! The tools are required, never skipped: `./scripts/test` installs
//! cargo-deb (`cargo install cargo-deb --locked`) and lintian (apt-get).
//! `cargo deb --no-build` packs the binary `cargo test --release` has
//! already built, so this test starts no build of its own that could race
//! the one cargo holds while tests run.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::bin;

/// Runs a packaging tool; panics with how to get it when it is missing.
fn run(cmd: &mut Command, how_to_install: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} ({e}): {how_to_install}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}\n{}\n({how_to_install})",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

const CARGO_DEB: &str =
    "install it with `cargo install cargo-deb --version 3.8.0 --locked` (./scripts/test does)";
const DPKG: &str = "dpkg-deb comes with dpkg (every Debian/Ubuntu)";
const LINTIAN: &str = "install it with `apt-get install -y lintian` (./scripts/test does)";

/// `cargo deb --no-build` on the binary of this test run, into `out_dir`.
fn build_deb(out_dir: &Path) -> PathBuf {
    let exe = Path::new(bin());
    // cargo-deb takes the binary from target/<profile dir>/; the profile
    // named "dev" lives in target/debug.
    let profile = match exe.parent().and_then(|p| p.file_name()) {
        Some(d) if d == "debug" => "dev".to_string(),
        Some(d) => d.to_string_lossy().into_owned(),
        None => panic!("{exe:?}: no profile directory"),
    };
    let deb = out_dir.join("mirrorcap.deb");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["deb", "--no-build", "--profile", &profile, "--output"])
        .arg(&deb)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo ({e})"));
    assert!(
        out.status.success(),
        "cargo deb --no-build failed ({}): {}\n{}\n(is cargo-deb there? {CARGO_DEB})",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(deb.is_file(), "cargo deb wrote no {deb:?}");
    deb
}

fn text(out: Output) -> String {
    String::from_utf8(out.stdout).unwrap()
}

/// One file of the package's data, read with dpkg-deb and tar.
fn data_file(deb: &Path, tmp: &Path, path: &str) -> String {
    let root = tmp.join("root");
    if !root.exists() {
        std::fs::create_dir(&root).unwrap();
        run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root), DPKG);
    }
    std::fs::read_to_string(root.join(path.trim_start_matches('/')))
        .unwrap_or_else(|e| panic!("{path} in the package: {e}"))
}

/// One control file (conffiles, postinst, ...) of the package.
fn control_file(deb: &Path, tmp: &Path, name: &str) -> String {
    let ctl = tmp.join("DEBIAN");
    if !ctl.exists() {
        run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&ctl), DPKG);
    }
    std::fs::read_to_string(ctl.join(name))
        .unwrap_or_else(|e| panic!("control file {name} in the package: {e}"))
}

/// Issue 16, item 4: the package holds the binary at /usr/bin/mirrorcap,
/// the unit (ExecStart at that binary, the `mirrorcap` group for the
/// control socket: the issue-15 leftover), the example config as the
/// conffile /etc/mirrorcap/mirrorcap.toml and the copyright; its depends
/// are computed from the binary, libpcap0.8 (opened at run time for `bpf`)
/// is recommended; postinst creates the system group; lintian reports no
/// error.
#[test]
fn deb_package_has_binary_unit_conffile_and_no_lintian_error() {
    let tmp = tempfile::tempdir().unwrap();
    let deb = build_deb(tmp.path());

    // Files.
    let list = text(run(Command::new("dpkg-deb").arg("-c").arg(&deb), DPKG));
    let has = |p: &str| {
        list.lines()
            .any(|l| l.split_whitespace().nth(5) == Some(p))
    };
    for p in [
        "./usr/bin/mirrorcap",
        "./usr/lib/systemd/system/mirrorcap.service",
        "./etc/mirrorcap/mirrorcap.toml",
        "./usr/share/doc/mirrorcap/copyright",
    ] {
        assert!(has(p), "{p} missing from the package:\n{list}");
    }
    let bin_line = list
        .lines()
        .find(|l| l.ends_with(" ./usr/bin/mirrorcap"))
        .unwrap();
    assert!(bin_line.starts_with("-rwxr-xr-x 0/0 "), "{bin_line}");

    // Control fields.
    let field = |name: &str| {
        text(run(
            Command::new("dpkg-deb").arg("-f").arg(&deb).arg(name),
            DPKG,
        ))
        .trim()
        .to_string()
    };
    assert_eq!(field("Package"), "mirrorcap");
    assert_eq!(field("Section"), "net");
    let depends = field("Depends");
    assert!(depends.contains("libc6"), "Depends: {depends}");
    assert!(depends.contains("adduser"), "Depends: {depends}");
    assert!(!depends.contains("libpcap"), "Depends: {depends}");
    let recommends = field("Recommends");
    assert!(recommends.contains("libpcap0.8"), "Recommends: {recommends}");
    let description = field("Description");
    assert!(
        description.lines().count() > 3,
        "no extended description: {description}"
    );

    // Conffile and maintainer script.
    let conffiles = control_file(&deb, tmp.path(), "conffiles");
    assert_eq!(
        conffiles.lines().collect::<Vec<_>>(),
        ["/etc/mirrorcap/mirrorcap.toml"]
    );
    let postinst = control_file(&deb, tmp.path(), "postinst");
    assert!(
        postinst.contains("addgroup --system --quiet mirrorcap"),
        "{postinst}"
    );

    // The packaged unit and config are the repository's, the unit pointing
    // at the packaged binary and giving the daemon the `mirrorcap` group.
    let unit = data_file(&deb, tmp.path(), "/usr/lib/systemd/system/mirrorcap.service");
    let repo_unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/mirrorcap.service"
    ))
    .unwrap();
    assert_eq!(unit, repo_unit);
    let lines: Vec<&str> = unit.lines().map(str::trim).collect();
    for l in [
        "ExecStart=/usr/bin/mirrorcap run --config /etc/mirrorcap/mirrorcap.toml --dir /var/lib/mirrorcap",
        "DynamicUser=yes",
        "SupplementaryGroups=mirrorcap",
        "RuntimeDirectory=mirrorcap",
        "RuntimeDirectoryMode=0755",
    ] {
        assert!(lines.contains(&l), "unit lacks {l:?}:\n{unit}");
    }
    // PrivateUsers=yes maps no host group: `control_group` could not work.
    assert!(
        !lines.iter().any(|l| l.starts_with("PrivateUsers=")),
        "{unit}"
    );
    let config = data_file(&deb, tmp.path(), "/etc/mirrorcap/mirrorcap.toml");
    assert_eq!(
        config,
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/mirrorcap.toml"
        ))
        .unwrap()
    );
    let check = Command::new(bin())
        .args(["check-config"])
        .arg(tmp.path().join("root/etc/mirrorcap/mirrorcap.toml"))
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the packaged config: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    // lintian: no error. Warnings and notes are printed for the log.
    let out = Command::new("lintian")
        .args(["--no-tag-display-limit", "--display-info"])
        .arg(&deb)
        .output()
        .unwrap_or_else(|e| panic!("cannot run lintian ({e}): {LINTIAN}"));
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!("lintian:\n{report}");
    let errors: Vec<&str> = report.lines().filter(|l| l.starts_with("E:")).collect();
    assert!(errors.is_empty(), "lintian errors:\n{}", errors.join("\n"));
    // lintian exits non-zero for errors only (and for its own failures).
    assert!(
        out.status.success(),
        "lintian {}: {report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
