//! The Terraform deployment (`infra/terraform/`) kept true to the binary:
//! the roles' commands and environment (`templates/roles.json.tftpl`, which
//! `nodes.tf` renders into each launch template and the function's
//! environment) name only flags and variables the binary knows, every
//! template variable is one Terraform passes, and the cluster those roles
//! make starts here — real processes, etcd, an S3 server in the bucket's
//! place — and serves writes and queries. `terraform init` cannot download
//! providers on this machine, so this is what stands in for `terraform
//! validate` on the parts that touch Canopy.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use common::*;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/terraform");

fn read(rel: &str) -> String {
    std::fs::read_to_string(format!("{DIR}/{rel}")).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The variables a template uses: `${name}` interpolations and the names
/// its `%{ for … in name }` / `%{ if name … }` directives read, minus names a
/// `for` binds.
fn template_vars(text: &str) -> BTreeSet<String> {
    let mut bound = BTreeSet::new();
    let mut vars = BTreeSet::new();
    for directive in text.split("%{").skip(1) {
        let directive = directive.split('}').next().unwrap_or("").trim().trim_end_matches('~').trim();
        let expression = if let Some(rest) = directive.strip_prefix("for ") {
            let (names, expression) = rest.split_once(" in ").expect("`for … in …`");
            bound.extend(names.split(',').map(|n| n.trim().to_string()));
            expression
        } else {
            directive.strip_prefix("if ").unwrap_or_default()
        };
        // Identifiers outside string literals.
        for (i, piece) in expression.split('"').enumerate() {
            if i % 2 == 0 {
                let words = piece.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
                vars.extend(words.filter(|w| w.starts_with(|c: char| c.is_ascii_alphabetic())).map(String::from));
            }
        }
    }
    for piece in text.split("${").skip(1) {
        let name: String = piece.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
        assert!(!name.is_empty(), "only plain `${{name}}` interpolations in templates: {piece:.40}");
        vars.insert(name);
    }
    vars.retain(|v| !bound.contains(v));
    vars
}

/// The keys of every `templatefile(".../templates/<name>", { … })` call in
/// the `.tf` files (each call's keys; the calls of one template must agree).
fn templatefile_args(name: &str) -> Vec<BTreeSet<String>> {
    let mut calls = Vec::new();
    for entry in std::fs::read_dir(DIR).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "tf") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let needle = format!("templates/{name}\", {{");
        for call in text.split(&needle).skip(1) {
            let body = call.split("})").next().unwrap();
            let keys = body
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, _)| k.trim().to_string())
                .filter(|k| !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
                .collect();
            calls.push(keys);
        }
    }
    calls
}

#[test]
fn every_template_variable_is_passed_by_terraform_and_every_argument_used() {
    let templates: Vec<String> =
        std::fs::read_dir(format!("{DIR}/templates")).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(templates.len() >= 3, "templates: {templates:?}");
    for name in templates {
        let wanted = template_vars(&read(&format!("templates/{name}")));
        let calls = templatefile_args(&name);
        assert!(!calls.is_empty(), "templates/{name} is rendered nowhere");
        for passed in calls {
            assert_eq!(passed, wanted, "templates/{name}: what templatefile passes vs what the template uses");
        }
    }
}

/// The roles file rendered with this machine's values.
fn roles(values: &BTreeMap<&str, String>) -> serde_json::Value {
    let mut text = read("templates/roles.json.tftpl");
    for var in template_vars(&text) {
        let value = values.get(var.as_str()).unwrap_or_else(|| panic!("no test value for ${{{var}}}: add one here"));
        text = text.replace(&format!("${{{var}}}"), value);
    }
    serde_json::from_str(&text).expect("roles.json.tftpl renders to JSON")
}

fn env_of(role: &serde_json::Value) -> BTreeMap<String, String> {
    let env = role["env"].as_object().expect("an env map");
    env.iter().map(|(k, v)| (k.clone(), v.as_str().expect("string values").to_string())).collect()
}

fn help(role: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_canopy")).args([role, "--help"]).output().unwrap();
    assert!(out.status.success(), "canopy {role} --help");
    String::from_utf8(out.stdout).unwrap()
}

const NODE_ROLES: [&str; 4] = ["ingester", "querier", "compactor", "liaison"];

#[test]
fn the_roles_name_only_flags_and_variables_the_binaries_know() {
    let values = test_values("http://127.0.0.1:2379", "bucket", std::path::Path::new("/etc/canopy/cluster-secret"));
    let roles = roles(&values);
    let names: BTreeSet<&str> = roles.as_object().unwrap().keys().map(|k| k.as_str()).collect();
    assert_eq!(names, NODE_ROLES.iter().chain(&["lambda"]).copied().collect(), "the roles the Terraform deploys");
    for role in NODE_ROLES {
        let help = help(role);
        let args: Vec<&str> = roles[role]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(args[0], role, "{role}: the command starts with the role");
        for a in &args {
            // The launch template joins the arguments with spaces.
            assert!(!a.is_empty() && !a.contains(char::is_whitespace), "{role}: argument {a:?}");
            if a.starts_with("--") {
                assert!(help.contains(&format!("{a} ")), "canopy {role} has no flag {a}");
            }
        }
        for key in env_of(&roles[role]).keys() {
            assert!(help.contains(&format!("[env: {key}=")), "canopy {role} reads no variable {key}");
        }
    }
    // The function reads its environment by hand.
    let lambda_main = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/lambda/src/main.rs")).unwrap();
    for key in env_of(&roles["lambda"]).keys() {
        assert!(lambda_main.contains(&format!("\"{key}\"")), "the query function reads no variable {key}");
    }
    // Terraform owns the bucket's lifecycle rules, so no role may rewrite them.
    for role in ["ingester", "compactor"] {
        assert_eq!(env_of(&roles[role]).get("CANOPY_S3_ABORT_MULTIPART_DAYS").map(String::as_str), Some("0"), "{role}");
    }
}

/// Values standing in for what Terraform computes.
fn test_values(etcd: &str, bucket: &str, cluster_secret_file: &std::path::Path) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("cluster_secret_file", cluster_secret_file.to_string_lossy().into_owned()),
        ("etcd_endpoints", etcd.to_string()),
        ("bucket", bucket.to_string()),
        ("region", "us-east-1".to_string()),
        ("ingester_memory_budget_bytes", (256u64 << 20).to_string()),
        ("querier_cache_memory_bytes", (64u64 << 20).to_string()),
        ("querier_cache_disk_bytes", (256u64 << 20).to_string()),
        ("lambda_when", "over:1073741824".to_string()),
        ("lambda_function", "canopy-query".to_string()),
        ("lambda_concurrency_per_liaison", "25".to_string()),
        ("lambda_cache_memory_bytes", (64u64 << 20).to_string()),
        ("lambda_cache_disk_bytes", (256u64 << 20).to_string()),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_terraform_roles_start_as_a_cluster_and_serve_reads_and_writes() {
    let etcd = EtcdServer::start();
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    // What the boot script fetches from Parameter Store.
    let secret = dir.path().join("cluster-secret");
    std::fs::write(&secret, "Terraform-made-secret-0123456789\n").unwrap();
    let roles = roles(&test_values(&etcd.endpoint(), S3_BUCKET, &secret));
    // Two ingesters, as an auto-scaling group of two would run them.
    let services: Vec<Service> = ["ingester", "ingester", "querier", "compactor", "liaison"]
        .iter()
        .enumerate()
        .map(|(i, role)| Service {
            name: format!("{role}-{i}"),
            command: roles[role]["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
            environment: env_of(&roles[role]),
        })
        .collect();
    // The instance profile's credentials and the regional endpoint, here.
    let services: Vec<Service> = services
        .into_iter()
        .map(|mut s| {
            s.environment.insert("CANOPY_S3_ENDPOINT".into(), format!("http://127.0.0.1:{}", s3.port));
            s.environment.insert("AWS_ACCESS_KEY_ID".into(), S3_KEY.into());
            s.environment.insert("AWS_SECRET_ACCESS_KEY".into(), S3_SECRET.into());
            s
        })
        .collect();
    let (processes, liaison) = start_services(&services, dir.path(), |_, v| v.to_string());
    write_flush_and_check(liaison).await;
    drop(processes);
}
