//! The AWS stack in `deploy/aws/` (issue 16, item 5): every template passes
//! `cfn-lint` with no error, warning or informational finding; the config
//! its user data writes is one `mirrorcap check-config` accepts; the
//! instance role may only put objects under the capture prefix.
//!
//! Nothing here talks to AWS: cfn-lint checks the templates offline.
//! cfn-lint is required, never skipped: `./scripts/test` installs it from
//! PyPI when it is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::bin;

const TEMPLATE: &str = "deploy/aws/mirrorcap-targets.yaml";

fn templates() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/aws");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir:?}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    v
}

fn template() -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(TEMPLATE);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{p:?}: {e}"))
}

/// Issue 16, item 5: `cfn-lint deploy/aws/*.yaml` reports nothing, not
/// even an informational finding (exit code 0; 2 = error, 4 = warning,
/// 8 = informational).
#[test]
fn stack_templates_pass_cfn_lint() {
    let files = templates();
    assert!(
        files.iter().any(|f| f.ends_with(TEMPLATE)),
        "{TEMPLATE} missing: {files:?}"
    );
    let out = Command::new("cfn-lint")
        .args(["--include-checks", "I", "--"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run cfn-lint ({e}): pip install cfn-lint (./scripts/test installs it)")
        });
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && report.trim().is_empty(),
        "cfn-lint {}:\n{report}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // cfn-lint does check: a wrong target group protocol is an error.
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.yaml");
    std::fs::write(
        &bad,
        template().replace("Protocol: GENEVE", "Protocol: VXLAN"),
    )
    .unwrap();
    let out = Command::new("cfn-lint").arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// A parameter's `Default:` in the template.
fn default_of(t: &str, name: &str) -> String {
    let head = format!("  {name}:");
    let mut lines = t.lines().skip_while(|l| *l != head).skip(1);
    lines
        .by_ref()
        .take_while(|l| l.starts_with("    "))
        .find_map(|l| l.trim().strip_prefix("Default: "))
        .unwrap_or_else(|| panic!("no Default for parameter {name}"))
        .trim_matches('"')
        .to_string()
}

/// The config file the user data writes (the here-document), with the
/// template's `${...}` filled in from `vars`.
fn user_data_config(t: &str, vars: &[(&str, String)]) -> String {
    let start = "cat > /etc/mirrorcap/mirrorcap.toml <<'EOF'";
    let mut lines = t.lines().skip_while(|l| l.trim() != start).skip(1);
    let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "EOF").collect();
    assert!(!body.is_empty(), "no `{start}` here-document in {TEMPLATE}");
    let indent = body[0].len() - body[0].trim_start().len();
    let mut cfg = String::new();
    for l in body {
        cfg.push_str(l.get(indent..).unwrap_or(""));
        cfg.push('\n');
    }
    for (k, v) in vars {
        cfg = cfg.replace(&format!("${{{k}}}"), v);
    }
    assert!(!cfg.contains("${"), "a placeholder left:\n{cfg}");
    cfg
}

/// Issue 16, item 5: the config each target gets, for an NLB and for a
/// GWLB, passes `mirrorcap check-config` (the keys the stack writes are
/// the daemon's), and `health_tcp_listen` is the port the target groups
/// check.
#[test]
fn stack_user_data_config_passes_check_config() {
    let t = template();
    let tmp = tempfile::tempdir().unwrap();
    let port = default_of(&t, "HealthCheckPort");
    assert_eq!(
        t.matches("HealthCheckPort: !Ref HealthCheckPort").count(),
        2
    );
    let geneve = "geneve_listen = \"0.0.0.0:6081\"";
    assert!(t.contains(&format!("- {geneve}\n")), "{TEMPLATE}: {geneve}");
    for (lb, geneve_line) in [("nlb", "# geneve_listen: off"), ("gwlb", geneve)] {
        let vars = [
            ("AWS::StackName", "mirrorcap-test".to_string()),
            ("AWS::Region", "eu-central-1".to_string()),
            ("GeneveListen", geneve_line.to_string()),
            ("HealthCheckPort", port.clone()),
            ("AllowSources", "10.0.0.0/16".to_string()),
            ("RotateInterval", default_of(&t, "RotateInterval")),
            ("LocalRetention", default_of(&t, "LocalRetention")),
            (
                "CaptureBucket",
                "mirrorcap-test-capturebucket-1a2b3c".to_string(),
            ),
            ("CapturePrefix", default_of(&t, "CapturePrefix")),
        ];
        let cfg = user_data_config(&t, &vars);
        assert!(
            cfg.contains(&format!("health_tcp_listen = \"0.0.0.0:{port}\"")),
            "{cfg}"
        );
        assert!(cfg.contains("\n[output.s3]\n"), "{cfg}");
        let path = tmp.path().join(format!("{lb}.toml"));
        std::fs::write(&path, &cfg).unwrap();
        let out = Command::new(bin())
            .arg("check-config")
            .arg(&path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{lb}: {}\n{cfg}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Issue 16, item 5: the instance role may put objects (single PUT and
/// multipart) under the capture prefix and abort its multipart uploads,
/// and read the package object when it comes from S3: no other S3 action,
/// no managed policy. The bucket aborts incomplete multipart uploads.
#[test]
fn stack_instance_role_only_puts_under_the_prefix() {
    let t = template();
    let role: String = t
        .lines()
        .skip_while(|l| *l != "  TargetRole:")
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .collect::<Vec<_>>()
        .join("\n");
    assert!(!role.is_empty(), "no TargetRole in {TEMPLATE}");
    assert!(!role.contains("ManagedPolicyArns"), "{role}");
    let mut actions: Vec<&str> = role
        .split(|c: char| c.is_whitespace() || c == '"' || c == ',' || c == '[' || c == ']')
        .filter(|w| w.contains(':') && !w.ends_with(':') && w.split(':').count() == 2)
        .filter(|w| {
            let (svc, action) = w.split_once(':').unwrap();
            !svc.is_empty()
                && svc
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && !action.is_empty()
                && action
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '*')
        })
        .collect();
    actions.sort();
    actions.dedup();
    assert_eq!(
        actions,
        [
            "s3:AbortMultipartUpload",
            "s3:GetObject",
            "s3:PutObject",
            "sts:AssumeRole"
        ],
        "{role}"
    );
    assert!(
        role.contains("Resource: !Sub \"${CaptureBucket.Arn}/${CapturePrefix}/*\""),
        "{role}"
    );
    // GetObject is only for the package, only when it comes from S3.
    let get = role.find("s3:GetObject").unwrap();
    assert!(role[..get].contains("- PackageFromS3"), "{role}");
    assert!(t.contains("AbortIncompleteMultipartUpload:\n              DaysAfterInitiation: 1"));
}
