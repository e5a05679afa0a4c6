//! The docker-compose topology (`infra/compose/docker-compose.yml`), started
//! here from the file itself: every Canopy service runs as a real process
//! with the command, flags and environment the YAML gives it — an
//! in-process S3 server in MinIO's place, Debian's etcd in etcd's, loopback
//! ports in the containers', temporary folders in the volumes' — and then
//! takes writes and answers queries through its liaison. A flag or variable
//! the CLI no longer knows fails here instead of in a user's `docker compose up`.

mod common;

use common::*;
use yaml_rust2::{Yaml, YamlLoader};

fn compose_file() -> Yaml {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/infra/compose/docker-compose.yml");
    let text = std::fs::read_to_string(path).unwrap();
    YamlLoader::load_from_str(&text).unwrap().remove(0)
}

/// The services running the Canopy image, in file order.
fn canopy_services(doc: &Yaml) -> Vec<Service> {
    let services = doc["services"].as_hash().expect("a services map");
    services
        .iter()
        .filter(|(_, s)| s["image"].as_str().is_some_and(|i| i.starts_with("canopy")))
        .map(|(name, s)| {
            let name = name.as_str().unwrap().to_string();
            let command = s["command"].as_vec().unwrap_or_else(|| panic!("{name}: command must be a list"));
            let environment = s["environment"].as_hash().unwrap_or_else(|| panic!("{name}: environment must be a map"));
            Service {
                command: command.iter().map(|a| a.as_str().expect("string arguments").to_string()).collect(),
                environment: environment
                    .iter()
                    .map(|(k, v)| (k.as_str().unwrap().to_string(), v.as_str().expect("string values").to_string()))
                    .collect(),
                name,
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_topology_starts_from_its_file_and_serves_reads_and_writes() {
    let doc = compose_file();
    let services = canopy_services(&doc);
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["ingester-1", "ingester-2", "querier", "compactor", "liaison"], "the documented topology");
    // Every Canopy service waits for etcd and the bucket.
    for s in &services {
        let deps = doc["services"][s.name.as_str()]["depends_on"].as_hash().unwrap_or_else(|| panic!("{}: no depends_on", s.name));
        let deps: Vec<&str> = deps.keys().filter_map(|k| k.as_str()).collect();
        assert!(deps.contains(&"etcd") && deps.contains(&"createbucket"), "{}: depends on {deps:?}", s.name);
    }

    let etcd = EtcdServer::start();
    let s3 = S3Server::start();
    let dir = tempfile::tempdir().unwrap();
    // The containers' world, mapped onto this machine.
    let endpoint = |v: &str| match v {
        "http://etcd:2379" => etcd.endpoint(),
        "http://minio:9000" => format!("http://127.0.0.1:{}", s3.port),
        "s3://canopy" => format!("s3://{S3_BUCKET}"),
        other => other.to_string(),
    };
    let env_value = |k: &str, v: &str| match k {
        "AWS_ACCESS_KEY_ID" => S3_KEY.to_string(),
        "AWS_SECRET_ACCESS_KEY" => S3_SECRET.to_string(),
        _ => endpoint(v),
    };
    let (processes, liaison) = start_services(&services, dir.path(), env_value);
    write_flush_and_check(liaison).await;
    drop(processes);
}
