//! docs/configuration.md is the binary's own `--help` for every role, so the
//! configuration reference cannot drift from the CLI: a flag added, renamed
//! or re-documented without regenerating it fails here. Regenerate with
//! `CANOPY_BLESS=1 cargo nextest run -p canopy --test config_reference`.

const ROLES: [&str; 5] = ["standalone", "liaison", "ingester", "querier", "compactor"];

fn help(role: &str) -> String {
    // A clean environment: --help shows the value of any CANOPY_* variable set.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_canopy")).args([role, "--help"]).env_clear().output().unwrap();
    assert!(out.status.success(), "canopy {role} --help failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

fn render() -> String {
    let mut doc = String::from(
        "# Configuration reference\n\n\
         Generated from `canopy <role> --help` (`tests/config_reference.rs` fails when this file and the binary \
         disagree; regenerate with `CANOPY_BLESS=1 cargo nextest run -p canopy --test config_reference`). Every option \
         can also be set by the environment variable shown with it. How to choose the values: \
         [operations.md](operations.md).\n",
    );
    for role in ROLES {
        doc.push_str(&format!("\n## canopy {role}\n\n```text\n{}```\n", help(role)));
    }
    doc
}

#[test]
fn the_configuration_reference_is_the_clis_own_help() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/configuration.md");
    let want = render();
    if std::env::var_os("CANOPY_BLESS").is_some() {
        std::fs::write(path, &want).unwrap();
    }
    let have = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        have == want,
        "docs/configuration.md differs from the binary's --help; regenerate it: CANOPY_BLESS=1 cargo nextest run -p canopy --test config_reference"
    );
}
