//! Scale-out on a NATS cluster: seed lists, replica counts of everything
//! aigw keeps in JetStream, and scaling a deployment up in place.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::TryStreamExt;
use serde_json::json;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::harness::{Options, TestEnv, completion, user};
use crate::nats_cluster::NatsCluster;

/// Runs an `aigw` command to its end, failing the test if it takes over a
/// minute (a hang is a failure too).
pub async fn run(mut command: Command) -> Output {
    let started = tokio::task::spawn_blocking(move || command.output().unwrap());
    tokio::time::timeout(Duration::from_secs(60), started)
        .await
        .expect("the command hung")
        .unwrap()
}

/// Every stream aigw created for `env` (the requests and jobs streams and
/// the streams behind its buckets and object stores), by name, with its
/// configured replicas and how many peers hold it.
async fn replicas(env: &TestEnv) -> Vec<(String, usize, usize)> {
    let names = env.common.names().unwrap();
    let client = async_nats::connect(env.common.nats_url.split(',').next().unwrap())
        .await
        .unwrap();
    let mut js = jetstream::new(client);
    // A loaded machine (the whole suite on two cores) can take longer than
    // the default 5 s to answer a cluster's info requests.
    js.set_timeout(Duration::from_secs(30));
    let ns = names.namespace();
    let mut out = vec![];
    for stream in [
        names.requests_stream(),
        names.jobs_stream(),
        format!("KV_{ns}_limits"),
        format!("KV_{ns}_health"),
        format!("OBJ_{}", names.media_bucket()),
        format!("OBJ_{}", names.bodies_bucket()),
    ] {
        let mut s = js.get_stream(&stream).await.unwrap();
        let info = s.info().await.unwrap().clone();
        let peers = info
            .cluster
            .map(|c| c.replicas.len() + usize::from(c.leader.is_some()))
            .unwrap_or(1);
        out.push((stream, info.config.num_replicas, peers));
    }
    for stream in [names.requests_stream(), names.jobs_stream()] {
        let s = js.get_stream(&stream).await.unwrap();
        let consumers: Vec<String> = s.consumer_names().try_collect().await.unwrap();
        for name in consumers {
            let mut c: jetstream::consumer::PullConsumer = s.get_consumer(&name).await.unwrap();
            let info = c.info().await.unwrap().clone();
            let peers = info
                .cluster
                .map(|c| c.replicas.len() + usize::from(c.leader.is_some()))
                .unwrap_or(1);
            out.push((format!("consumer {name}"), info.config.num_replicas, peers));
        }
    }
    out
}

async fn one_chat(env: &TestEnv, key: &str) {
    let response = env
        .chat(key, json!({"model": "m", "messages": user("hi")}))
        .await;
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
}

#[tokio::test]
async fn a_deployment_moves_from_one_to_three_replicas_on_a_three_node_cluster() {
    let cluster = NatsCluster::start(3).await;
    // An existing deployment with one replica, reached through the seeds.
    let env = TestEnv::with(Options {
        nats_url: Some(cluster.url()),
        ..Options::default()
    })
    .await;
    let mock = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(completion("m", "ok", 2, 2)))
        .mount(&mock)
        .await;
    env.add_provider("p", &format!("{}/v1", mock.uri()), &["m"])
        .await;
    let (_, key) = env.add_key("ci").await;
    one_chat(&env, &key).await;
    crate::harness::wait_until(Duration::from_secs(20), || async {
        replicas(&env).await.len() == 8
    })
    .await;
    let before = replicas(&env).await;
    assert_eq!(before.len(), 8, "{before:?}");
    assert!(before.iter().all(|(_, r, _)| *r <= 1), "{before:?}");

    // The documented command scales every stream, bucket and consumer.
    let mut migrate = env.role_process("migrate");
    migrate.env("AIGW_NATS_REPLICAS", "3");
    let out = run(migrate).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let after = replicas(&env).await;
    assert!(after.iter().all(|(_, r, _)| *r == 3), "{after:?}");
    // Placed on every node, not only configured.
    crate::harness::wait_until(Duration::from_secs(20), || async {
        replicas(&env).await.iter().all(|(_, _, peers)| *peers == 3)
    })
    .await;
    one_chat(&env, &key).await;

    // More replicas than nodes: a clear error naming the setting, at once.
    let started = Instant::now();
    let mut migrate = env.role_process("migrate");
    migrate.env("AIGW_NATS_REPLICAS", "5");
    let out = run(migrate).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("AIGW_NATS_REPLICAS=5"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30));
    // Nothing was lowered or broken by the refusal.
    assert!(replicas(&env).await.iter().all(|(_, r, _)| *r == 3));
    one_chat(&env, &key).await;
}

#[tokio::test]
async fn roles_started_with_three_replicas_create_everything_with_three() {
    let cluster = NatsCluster::start(3).await;
    let env = TestEnv::with(Options {
        nats_url: Some(cluster.url()),
        nats_replicas: 3,
        ..Options::default()
    })
    .await;
    // The dispatcher creates its consumers once it starts.
    crate::harness::wait_until(Duration::from_secs(20), || async {
        replicas(&env).await.len() == 8
    })
    .await;
    let all = replicas(&env).await;
    assert!(all.iter().all(|(_, r, _)| *r == 3), "{all:?}");
}

#[tokio::test]
async fn a_single_server_refuses_three_replicas_with_a_clear_message() {
    let env = TestEnv::start().await;
    let mut migrate = env.role_process("migrate");
    migrate.env("AIGW_NATS_REPLICAS", "3");
    let out = run(migrate).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("AIGW_NATS_REPLICAS=3"), "{stderr}");

    // Out of range and malformed values never reach NATS.
    for bad in ["0", "6", "three"] {
        let mut migrate = env.role_process("migrate");
        migrate.env("AIGW_NATS_REPLICAS", bad);
        let out = run(migrate).await;
        assert!(!out.status.success(), "{bad}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("AIGW_NATS_REPLICAS"));
    }
}
